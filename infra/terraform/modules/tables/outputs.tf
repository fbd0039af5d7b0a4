output "names" {
  description = "Table name by names.json key."
  value       = { for k, t in aws_dynamodb_table.this : k => t.name }
}

output "arns" {
  description = "Table ARN by names.json key."
  value       = { for k, t in aws_dynamodb_table.this : k => t.arn }
}
