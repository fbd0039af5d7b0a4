resource "aws_ecs_cluster" "this" {
  name = var.cluster_name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "workers" {
  name              = var.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_ecs_task_definition" "worker" {
  for_each = var.applications

  family                   = "${var.name_prefix}cafe-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = var.execution_role_arn
  task_role_arn            = var.task_role_arns[each.key]

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([{
    name      = "cafe"
    image     = var.image
    essential = true
    command   = each.value.command
    # `nobody`-style distroless uid: the worker needs no privilege and no writable root.
    user                   = "65532"
    readonlyRootFilesystem = true
    privileged             = false
    # SIGTERM starts the worker's drain: it finishes the in-flight batch, checkpoints and
    # hands its leases off. 120 s (the Fargate maximum) is well above that: a batch is
    # seconds, and the lease failover the drain races is 10 s by default (`--failover`).
    # A SIGKILL before the drain ends only costs a redelivery from the last checkpoint.
    stopTimeout = 120
    linuxParameters = {
      initProcessEnabled = true
    }
    environment = [for name in sort(keys(each.value.environment)) : { name = name, value = each.value.environment[name] }]
    secrets     = [for name in sort(keys(each.value.secrets)) : { name = name, valueFrom = each.value.secrets[name] }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.workers.name
        awslogs-region        = var.region
        awslogs-stream-prefix = each.key
      }
    }
  }])
}

resource "aws_ecs_service" "worker" {
  for_each = var.applications

  name             = each.key
  cluster          = aws_ecs_cluster.this.id
  task_definition  = aws_ecs_task_definition.worker[each.key].arn
  launch_type      = "FARGATE"
  platform_version = "LATEST"
  desired_count    = each.value.min_count
  propagate_tags   = "SERVICE"

  # New tasks start before old ones stop; leases move by handoff and failover, so two
  # generations overlapping briefly is safe (a shard has one holder at a time).
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [var.security_group_id]
    assign_public_ip = false
  }

  lifecycle {
    # Auto scaling owns the count after creation (the relay's stays as set).
    ignore_changes = [desired_count]
  }
}

# ---------------------------------------------------------------------------------------
# Auto scaling on projection lag
# ---------------------------------------------------------------------------------------

resource "aws_appautoscaling_target" "worker" {
  for_each = { for app, a in var.applications : app => a if a.autoscale }

  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.worker[each.key].name}"
  min_capacity       = each.value.min_count
  max_capacity       = var.max_count

  lifecycle {
    precondition {
      condition     = each.value.min_count <= var.max_count
      error_message = "The minimum task count of ${each.key} exceeds the maximum (worker_max_count, capped at the shard count when PROVISIONED)."
    }
  }
}

resource "aws_appautoscaling_policy" "lag" {
  for_each = aws_appautoscaling_target.worker

  name               = "${var.name_prefix}cafe-${each.key}-projection-lag"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.worker[each.key].service_namespace
  scalable_dimension = aws_appautoscaling_target.worker[each.key].scalable_dimension
  resource_id        = aws_appautoscaling_target.worker[each.key].resource_id

  target_tracking_scaling_policy_configuration {
    target_value = var.lag_target_seconds
    # Slow in: a lease rebalance after a scale-in costs a failover pause per shard.
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    # The worker's per-application gauge (consumers/src/metrics.rs PROJECTION_LAG_SECONDS,
    # published by consumers/src/cloudwatch.rs with dimensions Stream and Application).
    customized_metric_specification {
      namespace   = var.metrics_namespace
      metric_name = "projection_lag_seconds"
      statistic   = "Maximum"
      unit        = "Seconds"

      dimensions {
        name  = "Stream"
        value = var.stream_name
      }

      dimensions {
        name  = "Application"
        value = each.key
      }
    }
  }
}
