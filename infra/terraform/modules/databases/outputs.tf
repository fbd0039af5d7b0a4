output "postgres_url_secret_arn" {
  description = "Secret holding the orders model's PostgreSQL URL (CAFE_POSTGRES_URL)."
  value       = aws_secretsmanager_secret.url["postgres"].arn
}

output "mongo_url_secret_arn" {
  description = "Secret holding the documents model's DocumentDB URL (CAFE_MONGO_URL)."
  value       = aws_secretsmanager_secret.url["mongo"].arn
}

output "redis_url_secret_arn" {
  description = "Secret holding the cache model's ElastiCache URL (CAFE_REDIS_URL)."
  value       = aws_secretsmanager_secret.url["redis"].arn
}

output "memorydb_url_secret_arn" {
  description = "Secret holding the inventory model's MemoryDB URL (CAFE_MEMORYDB_URL)."
  value       = aws_secretsmanager_secret.url["memorydb"].arn
}

output "url_secret_arns" {
  description = "Every URL secret (what the ECS execution role may read)."
  value       = [for s in aws_secretsmanager_secret.url : s.arn]
}

output "redshift_workgroup_name" {
  description = "Redshift Serverless workgroup (CAFE_REDSHIFT_WORKGROUP)."
  value       = aws_redshiftserverless_workgroup.analytics.workgroup_name
}

output "redshift_workgroup_arn" {
  description = "Redshift Serverless workgroup ARN (the Data API's resource)."
  value       = aws_redshiftserverless_workgroup.analytics.arn
}

output "redshift_database" {
  description = "Warehouse database (CAFE_REDSHIFT_DATABASE)."
  value       = aws_redshiftserverless_namespace.analytics.db_name
}

output "redshift_admin_secret_arn" {
  description = "The Redshift-managed admin secret the Data API authenticates with (CAFE_REDSHIFT_SECRET_ARN)."
  value       = aws_redshiftserverless_namespace.analytics.admin_password_secret_arn
}

output "aurora_endpoint" {
  description = "Writer endpoint of the orders cluster."
  value       = aws_rds_cluster.orders.endpoint
}

output "docdb_endpoint" {
  description = "Endpoint of the documents cluster."
  value       = aws_docdb_cluster.documents.endpoint
}
