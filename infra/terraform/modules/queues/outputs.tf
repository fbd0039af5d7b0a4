output "payments_queue_name" {
  description = "Payment requests queue name."
  value       = aws_sqs_queue.payments.name
}

output "payments_queue_arn" {
  description = "Payment requests queue ARN."
  value       = aws_sqs_queue.payments.arn
}

output "payments_queue_url" {
  description = "Payment requests queue URL."
  value       = aws_sqs_queue.payments.url
}

output "payments_dlq_name" {
  description = "Dead-letter queue name."
  value       = aws_sqs_queue.payments_dlq.name
}

output "payments_dlq_arn" {
  description = "Dead-letter queue ARN."
  value       = aws_sqs_queue.payments_dlq.arn
}

output "payments_dlq_url" {
  description = "Dead-letter queue URL."
  value       = aws_sqs_queue.payments_dlq.url
}

output "projector_failures_queue_arn" {
  description = "The projector function's on-failure queue ARN, or null."
  value       = one(aws_sqs_queue.projector_failures[*].arn)
}
