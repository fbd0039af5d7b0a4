output "cluster_name" {
  description = "ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "service_names" {
  description = "ECS service by application."
  value       = { for k, s in aws_ecs_service.worker : k => s.name }
}

output "task_definition_arns" {
  description = "Task definition ARN by application."
  value       = { for k, t in aws_ecs_task_definition.worker : k => t.arn }
}
