# Inputs of the pixell-runtime stack. Defaults follow the deployment guide:
# one Fargate task of 0.5 vCPU / 1 GiB, the supervisor on port 80.

variable "aws_region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Name of the ECR repository, ECS cluster, service, task family, log group (/ecs/<name>) and ALB."
  type        = string
  default     = "pixell-runtime"
}

variable "image_tag" {
  description = "Tag of the image in the ECR repository (the guide pushes pixell-runtime:multipar)."
  type        = string
  default     = "multipar"
}

variable "image" {
  description = "Full image reference; empty means <this stack's ECR repository>:<image_tag>."
  type        = string
  default     = ""
}

variable "task_cpu" {
  description = "Fargate task CPU units (512 = 0.5 vCPU)."
  type        = number
  default     = 512
}

variable "task_memory" {
  description = "Fargate task memory in MiB."
  type        = number
  default     = 1024
}

variable "container_port" {
  description = "Port of the supervisor inside the task (SUPERVISOR_PORT); the ALB targets it."
  type        = number
  default     = 80
}

variable "vpc_id" {
  description = "VPC for the ALB and the tasks."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the internet-facing ALB (at least two availability zones)."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks; they need a route to ECR, S3, CloudWatch Logs and PyPI (NAT or VPC endpoints). Empty means the public subnets."
  type        = list(string)
  default     = []
}

variable "assign_public_ip" {
  description = "Give tasks a public IP: needed only when their subnets have no NAT gateway (e.g. the default VPC)."
  type        = bool
  default     = false
}

variable "allowed_cidrs" {
  description = "Who may reach the ALB on port 80 (and 443 when a certificate is set)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "certificate_arn" {
  description = "ACM certificate for an HTTPS listener on 443; empty means HTTP on port 80 only, as in the guide."
  type        = string
  default     = ""
}

variable "alb_deletion_protection" {
  description = "Protect the ALB from deletion; set false before `terraform destroy`."
  type        = bool
  default     = true
}

variable "alb_stickiness" {
  description = "ALB stickiness (lb_cookie, cookie AWSALB) on the tasks' target group: a client that keeps the cookie stays on one task, so a conversation an agent keeps in process memory is not split across tasks. false: plain round robin."
  type        = bool
  default     = true
}

variable "alb_stickiness_duration" {
  description = "Seconds the AWSALB cookie binds a client to its task (lb_cookie cookie_duration, 1-604800); the default 900 is the supervisor's default session_idle_timeout (15m)."
  type        = number
  default     = 900

  validation {
    condition     = var.alb_stickiness_duration >= 1 && var.alb_stickiness_duration <= 604800
    error_message = "alb_stickiness_duration must be 1-604800 seconds (the ALB's lb_cookie range)."
  }
}

variable "packages_bucket" {
  description = "S3 bucket holding the APKG packages; the task role may read it (s3:// package sources). Empty means no S3 access."
  type        = string
  default     = ""
}

variable "par_agents" {
  description = "PAR_AGENTS: JSON array of agents ({\"id\", \"package\", \"sha256\", ...}); empty means the agents baked into the image."
  type        = string
  default     = ""
}

variable "admin_token" {
  description = "PAR_ADMIN_TOKEN for the supervisor's mutating routes; empty: a token is made at each start in $PAR_HOME/run (being on loopback grants nothing)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "desired_count" {
  description = "Tasks to start with; autoscaling moves it between min_count and max_count."
  type        = number
  default     = 1
}

variable "min_count" {
  description = "Fewest tasks autoscaling keeps."
  type        = number
  default     = 1
}

variable "max_count" {
  description = "Most tasks autoscaling starts."
  type        = number
  default     = 4
}

variable "cpu_target_percent" {
  description = "Average service CPU that target tracking aims for."
  type        = number
  default     = 60
}

variable "memory_target_percent" {
  description = "Average service memory that target tracking aims for."
  type        = number
  default     = 75
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps the task logs."
  type        = number
  default     = 365
}

variable "health_check_grace_seconds" {
  description = "Time the service gives a new task (agents fetch packages and build Python environments) before ALB health counts."
  type        = number
  default     = 120
}

variable "otel_collector" {
  description = "Run the AWS Distro for OpenTelemetry collector as a sidecar: it takes OTLP on 127.0.0.1:4318 (HTTP) and 4317 (gRPC) from the supervisor, its workers and the agents (OTEL_EXPORTER_OTLP_ENDPOINT is set for them), sends traces to AWS X-Ray and OTLP metrics to CloudWatch (EMF); the task role gets the X-Ray and log-group permissions it needs. false: no sidecar, no tracing endpoint."
  type        = bool
  default     = false
}

variable "otel_collector_image" {
  description = "Image of the collector sidecar (the public AWS Distro for OpenTelemetry collector, pinned; its /healthcheck binary is the container health check)."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0"
}

variable "otel_collector_cpu" {
  description = "CPU units reserved for the collector sidecar out of task_cpu (the supervisor and its agents share the rest)."
  type        = number
  default     = 128

  validation {
    condition     = var.otel_collector_cpu >= 0
    error_message = "otel_collector_cpu must be 0 or more (below task_cpu: checked on the task definition)."
  }
}

variable "otel_collector_memory" {
  description = "MiB of memory the collector sidecar may use (its hard limit; 64 MiB of it reserved) out of task_memory."
  type        = number
  default     = 256

  validation {
    condition     = var.otel_collector_memory >= 64
    error_message = "otel_collector_memory must be at least 64 MiB (below task_memory: checked on the task definition)."
  }
}

variable "otel_sampling_ratio" {
  description = "Share of new traces sampled when the collector is on (OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG): 1 = every request; an incoming traceparent's sampled flag is followed either way."
  type        = number
  default     = 1

  validation {
    condition     = var.otel_sampling_ratio >= 0 && var.otel_sampling_ratio <= 1
    error_message = "otel_sampling_ratio must be between 0 and 1."
  }
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default = {
    Project = "pixell-runtime"
  }
}
