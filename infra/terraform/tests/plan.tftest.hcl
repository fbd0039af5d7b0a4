# Offline plan of the whole configuration against a mocked AWS provider (Terraform 1.7+):
# `terraform test` after `terraform init -backend=false -plugin-dir=/opt/tf-plugins`.
# It evaluates every expression `terraform validate` leaves alone (names.json, the
# worker map, the IAM statements, the dashboard rewrite) without credentials.

mock_provider "aws" {
  mock_data "aws_availability_zones" {
    defaults = {
      names    = ["us-east-1a", "us-east-1b", "us-east-1c"]
      zone_ids = ["use1-az1", "use1-az2", "use1-az4"]
    }
  }

  mock_data "aws_region" {
    defaults = {
      name = "us-east-1"
    }
  }

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }

  mock_data "aws_secretsmanager_random_password" {
    defaults = {
      random_password = "abcdefghijklmnopqrstuvwxyz0123456789ABCD"
    }
  }

  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }
}

variables {
  environment  = "test"
  jwt_issuer   = "https://issuer.example.com/"
  jwt_audience = ["cafe"]
  worker_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cafe:test"
}

run "default_names_come_from_names_json" {
  command = plan

  assert {
    condition     = module.stream.stream_name == "events"
    error_message = "The stream is not named from names.json."
  }

  assert {
    condition     = module.tables.names["active_orders_table"] == "active-orders"
    error_message = "The active orders table is not named from names.json."
  }
}

run "contract_and_wiring" {
  command = plan

  variables {
    name_prefix        = "stg-"
    projector_function = true
    fan_out_consumers  = ["orders", "analytics"]
    kinesis_mode       = "PROVISIONED"
    kinesis_shards     = 2
  }

  assert {
    condition     = module.stream.stream_name == "stg-events"
    error_message = "The prefix is not applied to the stream."
  }

  assert {
    condition     = join(",", sort(keys(local.workers_deployed))) == "active_orders,cache,documents,inventory,orders,payment-requests,relay"
    error_message = "The projector function must replace the analytics worker."
  }

  assert {
    condition     = join(" ", local.workers_deployed["orders"].command) == "consume --aws --application orders --sink projector:orders --fan-out orders"
    error_message = "A fan-out application must get --fan-out."
  }

  assert {
    condition     = local.worker_max_count == 2
    error_message = "The worker count must be capped at the shard count."
  }

  assert {
    condition     = module.queues.payments_queue_name == "stg-payments"
    error_message = "The payments queue is not prefixed."
  }

  assert {
    condition     = length(module.observability.alarm_names) == 17 && contains(module.observability.alarm_names, "stg-payments-dlq-depth")
    error_message = "Alarms must come from alarms.json, prefixed."
  }

  assert {
    condition     = join(",", module.iam.actions["worker-payment-requests"]["payments_queue"]) == "sqs:GetQueueUrl,sqs:GetQueueAttributes,sqs:SendMessage"
    error_message = "The payment-requests worker must send to the payments queue."
  }
}
