# The one CloudWatch log group that holds the supervisor's and every worker's JSON lines.
resource "aws_cloudwatch_log_group" "runtime" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with its own key; a customer KMS key is left to the account's policy
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
}
