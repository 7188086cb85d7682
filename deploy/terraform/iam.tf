# IAM: the execution role (ECS pulls the image and writes logs) and the task role
# (what the supervisor itself may do: read APKG packages from the packages bucket;
# with otel_collector, what the collector sidecar sends to X-Ray and CloudWatch).
# Agents get none of it unless their spec says task_role = true (README, "Agents kept apart").

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "read_packages" {
  count = var.packages_bucket == "" ? 0 : 1

  statement {
    sid       = "ReadPackages"
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::${var.packages_bucket}/*"]
  }

  statement {
    sid       = "ListPackages"
    actions   = ["s3:ListBucket"]
    resources = ["arn:aws:s3:::${var.packages_bucket}"]
  }
}

resource "aws_iam_role_policy" "read_packages" {
  count  = var.packages_bucket == "" ? 0 : 1
  name   = "${var.name}-read-packages"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.read_packages[0].json
}

# With otel_collector: what the collector sidecar does with the task role's
# credentials (the supervisor's role; agents still get none of it): send trace
# segments to X-Ray and read its sampling rules, and write EMF metric lines to
# its own log group. X-Ray's actions take no resource ARNs.
data "aws_iam_policy_document" "otel_collector" {
  count = var.otel_collector ? 1 : 0

  statement {
    sid = "XRayWrite"
    actions = [
      "xray:PutTraceSegments",
      "xray:PutTelemetryRecords",
      "xray:GetSamplingRules",
      "xray:GetSamplingTargets",
      "xray:GetSamplingStatisticSummaries",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "MetricsLogGroup"
    actions   = ["logs:PutLogEvents", "logs:CreateLogStream", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.otel_metrics[0].arn}:*"]
  }
}

resource "aws_iam_role_policy" "otel_collector" {
  count  = var.otel_collector ? 1 : 0
  name   = "${var.name}-otel-collector"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.otel_collector[0].json
}
