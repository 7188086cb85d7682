# The CloudWatch log group that holds the supervisor's and every worker's JSON lines.
resource "aws_cloudwatch_log_group" "runtime" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with its own key; a customer KMS key is left to the account's policy
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
}

# With otel_collector: the collector sidecar's own log lines, and the log group
# its awsemf exporter writes OTLP metrics to (CloudWatch turns the EMF lines
# into metrics in the namespace <name>).
resource "aws_cloudwatch_log_group" "otel_collector" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with its own key; a customer KMS key is left to the account's policy
  count             = var.otel_collector ? 1 : 0
  name              = "/ecs/${var.name}/otel-collector"
  retention_in_days = var.log_retention_days
}

resource "aws_cloudwatch_log_group" "otel_metrics" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with its own key; a customer KMS key is left to the account's policy
  count             = var.otel_collector ? 1 : 0
  name              = "/ecs/${var.name}/otel-metrics"
  retention_in_days = var.log_retention_days
}
