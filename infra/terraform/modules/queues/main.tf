locals {
  # AWS's guidance for an SQS event source: at least six times the function timeout, so
  # a message is not redelivered while the batching window and retries of a throttled
  # invocation are still holding it.
  visibility_timeout_seconds = 6 * var.payment_timeout_seconds
}

resource "aws_sqs_queue" "payments_dlq" {
  name                      = var.payments_dlq_name
  message_retention_seconds = 1209600 # 14 days, the SQS maximum: time to inspect and redrive
  kms_master_key_id         = var.kms_key_arn
  # Reusing a data key for 5 minutes keeps KMS calls (and their cost) off every message.
  kms_data_key_reuse_period_seconds = 300
}

resource "aws_sqs_queue" "payments" {
  name                              = var.payments_queue_name
  visibility_timeout_seconds        = local.visibility_timeout_seconds
  message_retention_seconds         = 345600 # 4 days
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = 300

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.payments_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
}

# Only the payments queue may dead-letter into the DLQ, so nothing else can bury
# messages in it.
resource "aws_sqs_queue_redrive_allow_policy" "payments_dlq" {
  queue_url = aws_sqs_queue.payments_dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.payments.arn]
  })
}

# Where the projector function's event source mapping records a batch it gave up on
# (metadata of the shard range, not the records: they stay in the stream for a replay).
resource "aws_sqs_queue" "projector_failures" {
  count = var.projector_failures_queue_name == null ? 0 : 1

  name                              = var.projector_failures_queue_name
  message_retention_seconds         = 1209600
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = 300
}
