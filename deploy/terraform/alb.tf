# The internet-facing ALB: port 80 (as the guide's `curl http://<alb>/...`), an
# optional HTTPS listener, and one target group of tasks checked on /runtime/health.

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "pixell-runtime ALB: HTTP(S) in, the supervisor port of the tasks out"
  vpc_id      = var.vpc_id

  ingress {
    #checkov:skip=CKV_AWS_260:a public ALB on port 80 is what the guide deploys; narrow allowed_cidrs or set certificate_arn for HTTPS
    description = "HTTP from the allowed clients"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = var.allowed_cidrs
  }

  ingress {
    description = "HTTPS from the allowed clients"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = var.allowed_cidrs
  }

  egress {
    description = "to the supervisor port of the tasks"
    from_port   = var.container_port
    to_port     = var.container_port
    protocol    = "tcp"
    cidr_blocks = [data.aws_vpc.selected.cidr_block]
  }
}

data "aws_vpc" "selected" {
  id = var.vpc_id
}

resource "aws_lb" "runtime" {
  #checkov:skip=CKV_AWS_91:access logs need an S3 bucket with the ELB log-delivery policy, which belongs to the account's logging setup; enable access_logs there
  #checkov:skip=CKV2_AWS_20:no redirect to HTTPS while the guide's verification uses http://; make the port-80 listener a redirect once certificate_arn is set
  #checkov:skip=CKV2_AWS_28:a WAF web ACL is the account's choice (aws_wafv2_web_acl_association); the runtime itself checks tokens on mutating routes
  name                       = var.name
  internal                   = false
  load_balancer_type         = "application"
  security_groups            = [aws_security_group.alb.id]
  subnets                    = var.public_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection
  # Agent routes stream (SSE, long invocations): keep idle connections a while.
  idle_timeout = 300
}

resource "aws_lb_target_group" "runtime" {
  #checkov:skip=CKV_AWS_378:TLS ends at the ALB; ALB-to-task traffic stays inside the VPC on the supervisor's plain HTTP port 80
  name                 = var.name
  port                 = var.container_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  # Conversations stay on one task: the ALB answers a client's first request
  # with its `AWSALB` cookie naming the task it chose, and sends the client's
  # later requests carrying that cookie to the same task while it is healthy.
  # The duration is the supervisor's session_idle_timeout (default 15m), so a
  # conversation idle for longer may move, as it would inside a task.
  # deploy/README.md, "Conversations across tasks", says which clients keep it.
  stickiness {
    type            = "lb_cookie"
    cookie_duration = var.alb_stickiness_duration
    enabled         = var.alb_stickiness
  }

  health_check {
    path                = "/runtime/health"
    port                = tostring(var.container_port)
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "http" {
  #checkov:skip=CKV_AWS_2:the guide verifies over http://<alb>/...; with certificate_arn set, HTTPS is served on 443 as well
  #checkov:skip=CKV_AWS_103:this listener is plain HTTP (see CKV_AWS_2); the HTTPS listener sets a TLS 1.2+ policy
  load_balancer_arn = aws_lb.runtime.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.runtime.arn
  }
}

resource "aws_lb_listener" "https" {
  count             = var.certificate_arn == "" ? 0 : 1
  load_balancer_arn = aws_lb.runtime.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.runtime.arn
  }
}
