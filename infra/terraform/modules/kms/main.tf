data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name

  # One key per data class: who may use a key is then a question about one kind of
  # data, and revoking or auditing one class touches nothing else.
  classes = {
    logs      = "CloudWatch Logs: VPC flow logs, function, worker, database and API access logs"
    pipeline  = "The event pipeline: Kinesis stream, DynamoDB tables, SQS queues"
    stores    = "Read-model stores: Aurora, DocumentDB, ElastiCache, MemoryDB, Redshift Serverless, Performance Insights"
    secrets   = "Secrets Manager: database credentials and connection URLs"
    alarms    = "SNS alarm topic"
    functions = "Lambda environment variables"
  }
}

data "aws_iam_policy_document" "key" {
  for_each = local.classes

  #checkov:skip=CKV_AWS_109: a key policy's Resource "*" is the key itself; the account root statement hands key administration to IAM policies, as AWS's default key policy does.
  #checkov:skip=CKV_AWS_111: same statement: without it the key becomes unmanageable; write access is still limited to principals IAM grants it to.
  #checkov:skip=CKV_AWS_356: in a key policy "*" can only mean this key.
  statement {
    sid       = "AccountAdministersThroughIAM"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account}:root"]
    }
  }

  dynamic "statement" {
    for_each = each.key == "logs" ? [1] : []

    content {
      sid = "CloudWatchLogsEncryptsLogGroupsOfThisAccount"
      actions = [
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:ReEncrypt*",
        "kms:GenerateDataKey*",
        "kms:Describe*",
      ]
      resources = ["*"]

      principals {
        type        = "Service"
        identifiers = ["logs.${local.region}.amazonaws.com"]
      }

      condition {
        test     = "ArnLike"
        variable = "kms:EncryptionContext:aws:logs:arn"
        values   = ["arn:${local.partition}:logs:${local.region}:${local.account}:log-group:*"]
      }
    }
  }

  dynamic "statement" {
    for_each = each.key == "alarms" ? [1] : []

    content {
      # CloudWatch alarms publish to the encrypted topic as the service, not as a role.
      sid       = "CloudWatchAlarmsPublishToTheEncryptedTopic"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
      resources = ["*"]

      principals {
        type        = "Service"
        identifiers = ["cloudwatch.amazonaws.com"]
      }

      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account]
      }
    }
  }
}

resource "aws_kms_key" "this" {
  for_each = local.classes

  description             = "${var.name_prefix}cafe ${each.key}: ${each.value}"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key[each.key].json
}

resource "aws_kms_alias" "this" {
  for_each = local.classes

  name          = "alias/${var.name_prefix}cafe-${each.key}"
  target_key_id = aws_kms_key.this[each.key].key_id
}
