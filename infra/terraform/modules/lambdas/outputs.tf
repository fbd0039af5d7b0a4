output "function_arns" {
  description = "Function ARN by key."
  value       = { for k, f in aws_lambda_function.this : k => f.arn }
}

output "api_id" {
  description = "HTTP API id (the dashboard's $${api_id})."
  value       = aws_apigatewayv2_api.this.id
}

output "api_endpoint" {
  description = "Base URL of the command API."
  value       = aws_apigatewayv2_stage.default.invoke_url
}
