# ECR repository that `docker push <account>.dkr.ecr.<region>.amazonaws.com/pixell-runtime:multipar` targets.
resource "aws_ecr_repository" "runtime" {
  #checkov:skip=CKV_AWS_51:the guide pushes the moving tag `multipar` on every release, so tags must stay mutable; pin releases by digest instead
  name                 = var.name
  image_tag_mutability = "MUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
  }
}

resource "aws_ecr_lifecycle_policy" "runtime" {
  repository = aws_ecr_repository.runtime.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "keep the 20 newest images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 20
      }
      action = { type = "expire" }
    }]
  })
}
