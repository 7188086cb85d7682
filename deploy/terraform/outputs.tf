# What the README's verification steps and `docker push` need.

output "alb_url" {
  description = "Base URL of the runtime: curl <alb_url>/supervisor/status"
  value       = "http://${aws_lb.runtime.dns_name}"
}

output "alb_dns_name" {
  description = "DNS name of the ALB."
  value       = aws_lb.runtime.dns_name
}

output "ecr_repository_url" {
  description = "docker tag pixell-runtime:multipar <ecr_repository_url>:multipar"
  value       = aws_ecr_repository.runtime.repository_url
}

output "cluster_name" {
  description = "ECS cluster (aws ecs update-service --cluster ...)."
  value       = aws_ecs_cluster.runtime.name
}

output "service_name" {
  description = "ECS service."
  value       = aws_ecs_service.runtime.name
}

output "task_definition_arn" {
  description = "The registered task definition revision."
  value       = aws_ecs_task_definition.runtime.arn
}

output "log_group_name" {
  description = "aws logs tail <log_group_name> --follow"
  value       = aws_cloudwatch_log_group.runtime.name
}
