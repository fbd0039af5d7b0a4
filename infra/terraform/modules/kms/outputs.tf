output "key_arns" {
  description = "Key ARN by data class: logs, pipeline, stores, secrets, alarms, functions."
  value       = { for k, v in aws_kms_key.this : k => v.arn }
}
