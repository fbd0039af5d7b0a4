output "stream_name" {
  description = "Stream name."
  value       = aws_kinesis_stream.this.name
}

output "stream_arn" {
  description = "Stream ARN."
  value       = aws_kinesis_stream.this.arn
}

output "consumer_arns" {
  description = "Enhanced fan-out consumer ARN by application."
  value       = { for k, c in aws_kinesis_stream_consumer.this : k => c.arn }
}
