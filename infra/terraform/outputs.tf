output "region" {
  description = "Region of the deployment."
  value       = local.region
}

output "api_endpoint" {
  description = "Base URL of the command API."
  value       = module.lambdas.api_endpoint
}

output "stream_name" {
  description = "The event stream."
  value       = module.stream.stream_name
}

output "stream_arn" {
  description = "The event stream's ARN."
  value       = module.stream.stream_arn
}

output "stream_consumer_arns" {
  description = "Enhanced fan-out consumer ARN by application."
  value       = module.stream.consumer_arns
}

output "table_names" {
  description = "Table name by names.json key."
  value       = module.tables.names
}

output "table_arns" {
  description = "Table ARN by names.json key."
  value       = module.tables.arns
}

output "payments_queue_url" {
  description = "Payment requests queue."
  value       = module.queues.payments_queue_url
}

output "payments_dlq_url" {
  description = "Payment requests dead-letter queue."
  value       = module.queues.payments_dlq_url
}

output "function_arns" {
  description = "Function ARN by key (api, payment, projector)."
  value       = module.lambdas.function_arns
}

output "worker_cluster" {
  description = "ECS cluster of the consumer workers."
  value       = module.workers.cluster_name
}

output "worker_services" {
  description = "ECS service by worker application."
  value       = module.workers.service_names
}

output "redshift_workgroup" {
  description = "Redshift Serverless workgroup of the analytics warehouse."
  value       = module.databases.redshift_workgroup_name
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms."
  value       = module.observability.alarm_topic_arn
}

output "dashboard_name" {
  description = "CloudWatch dashboard."
  value       = module.observability.dashboard_name
}

output "cafe_environment" {
  description = "The names as the code reads them (CAFE_<KEY>, infra/names.json's keys) and the region: what `cafe ... --aws` needs in its environment. The stores' URLs are secrets (worker_secret_arns)."
  value = merge(
    { AWS_REGION = local.region },
    { for k in local.prefixed_name_keys : "CAFE_${upper(k)}" => local.resource_names[k] },
    { CAFE_METRICS_NAMESPACE = local.names.metrics_namespace },
  )
}

output "worker_secret_arns" {
  description = "Secrets Manager ARNs of the stores' connection URLs, by store."
  value       = module.databases.url_secret_arns
}
