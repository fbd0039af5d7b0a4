resource "aws_kinesis_stream" "this" {
  name             = var.name
  retention_period = var.retention_hours
  encryption_type  = "KMS"
  kms_key_id       = var.kms_key_arn

  # On-demand streams size themselves; a shard count is only meaningful provisioned.
  shard_count = var.mode == "PROVISIONED" ? var.shard_count : null

  stream_mode_details {
    stream_mode = var.mode
  }
}

# Registered here rather than by the worker's `--fan-out` at start: a consumer is a
# billed resource that outlives tasks, so it belongs to the configuration. The worker
# finds it registered (ResourceInUse) and subscribes.
resource "aws_kinesis_stream_consumer" "this" {
  for_each = toset(var.fan_out_consumers)

  name       = each.key
  stream_arn = aws_kinesis_stream.this.arn
}
