output "function_role_arns" {
  description = "Role ARN by function key (api, payment, projector); projector is null when the function is not deployed."
  value = {
    api       = aws_iam_role.this["api-function"].arn
    payment   = aws_iam_role.this["payment-function"].arn
    projector = try(aws_iam_role.this["projector-function"].arn, null)
  }
  # Lambda checks the role can read the queue / stream when the event source mapping is
  # created, and ECS starts tasks as soon as the service exists: hand the roles out only
  # once their permissions are attached.
  depends_on = [aws_iam_role_policy.this]
}

output "worker_role_arns" {
  description = "Task role ARN by worker application."
  value       = { for app in var.worker_applications : app => aws_iam_role.this["worker-${app}"].arn }
  depends_on  = [aws_iam_role_policy.this]
}

output "ecs_execution_role_arn" {
  description = "The ECS execution role of every worker task."
  value       = aws_iam_role.this["ecs-execution"].arn
  depends_on  = [aws_iam_role_policy.this]
}

output "actions" {
  description = "Actions by role and resource key, as granted."
  value       = { for r in local.roles : r => local.actions[r] }
}
