variable "cluster_name" {
  description = "ECS cluster name."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of task families and policy names."
  type        = string
}

variable "applications" {
  description = "Worker services by application: command (the `cafe` arguments), environment (name => value), secrets (name => Secrets Manager ARN), min_count, autoscale (scaled on its projection lag; false: min_count tasks, always)."
  type = map(object({
    command     = list(string)
    environment = map(string)
    secrets     = map(string)
    min_count   = number
    autoscale   = bool
  }))
}

variable "max_count" {
  description = "Most tasks per service."
  type        = number
}

variable "image" {
  description = "Image of the `cafe` binary."
  type        = string
}

variable "cpu" {
  description = "Fargate CPU units per task."
  type        = number
}

variable "memory" {
  description = "Fargate memory (MiB) per task."
  type        = number
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the tasks."
  type        = list(string)
}

variable "security_group_id" {
  description = "The workers' security group."
  type        = string
}

variable "execution_role_arn" {
  description = "ECS execution role (image pull, secrets, logs)."
  type        = string
}

variable "task_role_arns" {
  description = "Task role ARN by application."
  type        = map(string)
}

variable "log_group_name" {
  description = "Log group of the containers."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "Customer managed key of the log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the log group."
  type        = number
}

variable "region" {
  description = "Region of the log group (awslogs driver)."
  type        = string
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the workers' metrics."
  type        = string
}

variable "stream_name" {
  description = "The stream (the Stream dimension of the lag metric)."
  type        = string
}

variable "lag_target_seconds" {
  description = "Target projection lag of the scaling policies."
  type        = number
}
