locals {
  functions = {
    api = {
      role_arn    = var.role_arns["api"]
      environment = var.api_environment
      # API Gateway gives up on an integration after 30 s.
      timeout     = 29
      memory      = 512
      concurrency = var.api_reserved_concurrency
    }
    payment = {
      role_arn    = var.role_arns["payment"]
      environment = var.payment_environment
      timeout     = var.payment_timeout_seconds
      memory      = 256
      # As many as the event source mapping may drive: fewer would throttle its
      # batches back into the queue and burn receive counts towards the DLQ.
      concurrency = var.payment_max_concurrency
    }
    projector = {
      role_arn    = var.role_arns["projector"]
      environment = var.projector_environment
      # The Data API polls a statement until it finishes; loads of a large batch take minutes.
      timeout     = 300
      memory      = 512
      concurrency = var.projector_reserved_concurrency
    }
  }

  deployed = { for k, f in local.functions : k => f if k != "projector" || var.projector_function }

  # `cargo lambda build --release --output-format zip` writes target/lambda/<binary>/bootstrap.zip.
  artifact = { for k, name in var.function_names : k => "${var.artifacts_dir}/cafe-lambda-${k}/bootstrap.zip" }
}

resource "aws_cloudwatch_log_group" "function" {
  for_each = local.deployed

  name              = "/aws/lambda/${var.function_names[each.key]}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_lambda_function" "this" {
  for_each = local.deployed

  #checkov:skip=CKV_AWS_116: no function is invoked asynchronously: the API synchronously by API Gateway, payment by its SQS mapping (the queue's redrive policy is its DLQ), the projector by its Kinesis mapping (failures go to its on-failure destination).
  #checkov:skip=CKV_AWS_117: the functions call only AWS APIs (DynamoDB, Kinesis, SQS, Redshift Data API) over IAM-signed TLS and reach nothing inside the VPC; attaching them would add ENIs and endpoint traffic for no isolation gain.
  #checkov:skip=CKV_AWS_272: the zip is built by cargo lambda in CI and uploaded directly; there is no AWS Signer profile or signed-artifact bucket in this stack to verify against.
  function_name = var.function_names[each.key]
  role          = each.value.role_arn
  runtime       = "provided.al2023"
  handler       = "bootstrap"
  architectures = [var.architecture]
  timeout       = each.value.timeout
  memory_size   = each.value.memory

  filename = local.artifact[each.key]
  # try(): validate and plan of other modules work before the functions are built.
  source_code_hash = try(filebase64sha256(local.artifact[each.key]), null)

  reserved_concurrent_executions = each.value.concurrency
  kms_key_arn                    = var.env_kms_key_arn

  environment {
    variables = each.value.environment
  }

  tracing_config {
    mode = "Active"
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function[each.key].name
  }
}

# ---------------------------------------------------------------------------------------
# Payment: SQS event source
# ---------------------------------------------------------------------------------------

resource "aws_lambda_event_source_mapping" "payment" {
  event_source_arn                   = var.payments_queue_arn
  function_name                      = aws_lambda_function.this["payment"].arn
  batch_size                         = var.payment_batch_size
  maximum_batching_window_in_seconds = var.payment_batching_window_seconds
  # The handler answers batchItemFailures: only the failed messages come back.
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.payment_max_concurrency
  }
}

# ---------------------------------------------------------------------------------------
# Projector: Kinesis event source (optional)
# ---------------------------------------------------------------------------------------

resource "aws_lambda_event_source_mapping" "projector" {
  count = var.projector_function ? 1 : 0

  # The stream, or the analytics fan-out consumer when one is registered.
  event_source_arn               = var.projector_event_source_arn
  function_name                  = aws_lambda_function.this["projector"].arn
  starting_position              = "TRIM_HORIZON"
  batch_size                     = var.projector_batch_size
  parallelization_factor         = var.projector_parallelization_factor
  bisect_batch_on_function_error = true
  maximum_retry_attempts         = var.projector_maximum_retry_attempts
  maximum_record_age_in_seconds  = var.projector_maximum_record_age_seconds
  # The handler answers the first record to retry from, as the worker checkpoints.
  function_response_types = ["ReportBatchItemFailures"]

  destination_config {
    on_failure {
      destination_arn = var.projector_failures_queue_arn
    }
  }

  lifecycle {
    precondition {
      condition     = var.projector_failures_queue_arn != null
      error_message = "The projector function needs its on-failure queue."
    }
  }
}

# ---------------------------------------------------------------------------------------
# API: HTTP API with a JWT authorizer
# ---------------------------------------------------------------------------------------

resource "aws_apigatewayv2_api" "this" {
  name          = var.api_name
  protocol_type = "HTTP"
  description   = "CloudCafe command API"
}

resource "aws_apigatewayv2_authorizer" "jwt" {
  api_id           = aws_apigatewayv2_api.this.id
  name             = "jwt"
  authorizer_type  = "JWT"
  identity_sources = ["$request.header.Authorization"]

  jwt_configuration {
    issuer   = var.jwt_issuer
    audience = var.jwt_audience
  }
}

resource "aws_apigatewayv2_integration" "api" {
  api_id                 = aws_apigatewayv2_api.this.id
  integration_type       = "AWS_PROXY"
  integration_method     = "POST"
  integration_uri        = aws_lambda_function.this["api"].invoke_arn
  payload_format_version = "2.0"
}

# Everything needs a verified token, except what the public routes below take out.
resource "aws_apigatewayv2_route" "default" {
  api_id             = aws_apigatewayv2_api.this.id
  route_key          = "$default"
  target             = "integrations/${aws_apigatewayv2_integration.api.id}"
  authorization_type = "JWT"
  authorizer_id      = aws_apigatewayv2_authorizer.jwt.id
}

resource "aws_apigatewayv2_route" "public" {
  for_each = toset(["GET /healthz", "GET /openapi.json"])

  #checkov:skip=CKV_AWS_309: deliberately public: the health check (load balancers and probes carry no token) and the OpenAPI document (clients need it to learn how to get one); both are read-only and serve no data.
  api_id             = aws_apigatewayv2_api.this.id
  route_key          = each.key
  target             = "integrations/${aws_apigatewayv2_integration.api.id}"
  authorization_type = "NONE"
}

resource "aws_cloudwatch_log_group" "api_access" {
  name              = "/aws/apigateway/${var.api_name}/access"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.this.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_rate_limit    = var.api_throttle_rate
    throttling_burst_limit   = var.api_throttle_burst
    detailed_metrics_enabled = true
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId          = "$context.requestId"
      requestTime        = "$context.requestTime"
      ip                 = "$context.identity.sourceIp"
      httpMethod         = "$context.httpMethod"
      routeKey           = "$context.routeKey"
      path               = "$context.path"
      status             = "$context.status"
      responseLength     = "$context.responseLength"
      responseLatency    = "$context.responseLatency"
      integrationLatency = "$context.integrationLatency"
      integrationStatus  = "$context.integrationStatus"
      integrationError   = "$context.integrationErrorMessage"
      authorizerError    = "$context.authorizer.error"
      principal          = "$context.authorizer.claims.sub"
    })
  }
}

resource "aws_lambda_permission" "api_gateway" {
  statement_id  = "AllowHttpApi"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this["api"].function_name
  principal     = "apigateway.amazonaws.com"
  # Any stage and route of this API, and nothing else.
  source_arn = "${aws_apigatewayv2_api.this.execution_arn}/*"
}
