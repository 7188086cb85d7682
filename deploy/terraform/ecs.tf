# ECS: the cluster, the task definition (one container: `par supervisor` on port 80,
# and with otel_collector the AWS Distro for OpenTelemetry collector beside it)
# and the service behind the ALB.

locals {
  image = var.image != "" ? var.image : "${aws_ecr_repository.runtime.repository_url}:${var.image_tag}"

  base_environment = [
    { name = "PAR_MODE", value = "supervisor" },
    { name = "SUPERVISOR_PORT", value = tostring(var.container_port) },
    { name = "PAR_HOME", value = "/var/lib/pixell-runtime" },
    { name = "PAR_LOG_FORMAT", value = "json" },
  ]
  agents_environment = var.par_agents == "" ? [] : [{ name = "PAR_AGENTS", value = var.par_agents }]
  admin_environment  = var.admin_token == "" ? [] : [{ name = "PAR_ADMIN_TOKEN", value = var.admin_token }]

  task_subnets = length(var.private_subnet_ids) > 0 ? var.private_subnet_ids : var.public_subnet_ids

  # Tracing (var.otel_collector): the supervisor exports its spans and its
  # workers' over OTLP/HTTP to the sidecar on the task's loopback, and passes
  # the same OTEL_* variables on to the agents (service name = agent id).
  collector_name = "otel-collector"
  otel_environment = var.otel_collector ? [
    { name = "OTEL_EXPORTER_OTLP_ENDPOINT", value = "http://127.0.0.1:4318" },
    { name = "OTEL_EXPORTER_OTLP_PROTOCOL", value = "http/protobuf" },
    { name = "OTEL_TRACES_SAMPLER", value = "parentbased_traceidratio" },
    { name = "OTEL_TRACES_SAMPLER_ARG", value = tostring(var.otel_sampling_ratio) },
  ] : []

  runtime_container = {
    name      = var.name
    image     = local.image
    essential = true
    # With the collector: the rest of the task's CPU, reserved for the supervisor
    # and its agents (a container without a cpu share would get the minimum
    # share against the collector's under contention).
    cpu          = var.otel_collector ? var.task_cpu - var.otel_collector_cpu : null
    portMappings = [{ name = "http", containerPort = var.container_port, hostPort = var.container_port, protocol = "tcp", appProtocol = "http" }]
    environment  = concat(local.base_environment, local.agents_environment, local.admin_environment, local.otel_environment)
    # START, not HEALTHY: the supervisor's exporter drops (and counts) spans
    # while nothing listens, and a collector that never turns healthy must not
    # keep the agents from serving.
    dependsOn = var.otel_collector ? [{ containerName = local.collector_name, condition = "START" }] : null
    healthCheck = {
      command     = ["CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${var.container_port}/runtime/health', timeout=4)"]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }
    stopTimeout     = 30
    linuxParameters = { initProcessEnabled = true }
    ulimits         = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.runtime.name
        awslogs-region        = var.aws_region
        awslogs-stream-prefix = "ecs"
      }
    }
  }

  # Not essential: a collector that crashes is restarted in place (restartPolicy)
  # and never stops the task; spans sent meanwhile are dropped by the exporters.
  collector_container = var.otel_collector ? [{
    name              = local.collector_name
    image             = var.otel_collector_image
    essential         = false
    cpu               = var.otel_collector_cpu
    memory            = var.otel_collector_memory
    memoryReservation = 64
    environment = [{
      name = "AOT_CONFIG_CONTENT"
      value = templatefile("${path.module}/otel-collector.yaml.tftpl", {
        region            = var.aws_region
        metrics_namespace = var.name
        metrics_log_group = one(aws_cloudwatch_log_group.otel_metrics[*].name)
      })
    }]
    # The image's /healthcheck asks the health_check extension on 127.0.0.1:13133.
    healthCheck = {
      command     = ["CMD", "/healthcheck"]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 10
    }
    restartPolicy          = { enabled = true, restartAttemptPeriod = 60 }
    readonlyRootFilesystem = true
    stopTimeout            = 10
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = one(aws_cloudwatch_log_group.otel_collector[*].name)
        awslogs-region        = var.aws_region
        awslogs-stream-prefix = "otel"
      }
    }
  }] : []
}

resource "aws_ecs_cluster" "runtime" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_task_definition" "runtime" {
  #checkov:skip=CKV_AWS_336:PAR_HOME needs a writable mount; no task volume is declared for it yet, so the root filesystem stays writable (the image itself runs read-only with PAR_HOME on a tmpfs, deploy/checks/container)
  family                   = var.name
  network_mode             = "awsvpc"
  requires_compatibilities = ["FARGATE"]
  cpu                      = tostring(var.task_cpu)
  memory                   = tostring(var.task_memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    cpu_architecture        = "X86_64"
    operating_system_family = "LINUX"
  }

  container_definitions = jsonencode(concat([local.runtime_container], local.collector_container))

  lifecycle {
    precondition {
      condition     = !var.otel_collector || (var.otel_collector_cpu < var.task_cpu && var.otel_collector_memory < var.task_memory)
      error_message = "The collector sidecar's otel_collector_cpu and otel_collector_memory must leave room in task_cpu and task_memory for the supervisor and its agents."
    }
  }
}

resource "aws_security_group" "tasks" {
  name        = "${var.name}-tasks"
  description = "pixell-runtime tasks: the supervisor port from the ALB only"
  vpc_id      = var.vpc_id

  ingress {
    description     = "supervisor port from the ALB"
    from_port       = var.container_port
    to_port         = var.container_port
    protocol        = "tcp"
    security_groups = [aws_security_group.alb.id]
  }

  egress {
    #checkov:skip=CKV_AWS_382:tasks fetch packages (S3, https://), install agents' Python dependencies from PyPI, and agents call their own external services, so outbound stays open
    description = "outbound: ECR, S3, CloudWatch Logs, PyPI, package URLs"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_ecs_service" "runtime" {
  name                              = var.name
  cluster                           = aws_ecs_cluster.runtime.id
  task_definition                   = aws_ecs_task_definition.runtime.arn
  desired_count                     = var.desired_count
  launch_type                       = "FARGATE"
  health_check_grace_period_seconds = var.health_check_grace_seconds
  enable_execute_command            = false

  network_configuration {
    subnets          = local.task_subnets
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = var.assign_public_ip
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.runtime.arn
    container_name   = var.name
    container_port   = var.container_port
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # Autoscaling owns the count after the first apply.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.http]
}
