variable "name_prefix" {
  description = "Prefix of the dashboard, topic and alarm names."
  type        = string
}

variable "region" {
  description = "Region the dashboard's widgets query."
  type        = string
}

variable "cloudwatch_dir" {
  description = "Directory holding the generated dashboard.json and alarms.json (infra/cloudwatch)."
  type        = string
}

variable "api_id" {
  description = "HTTP API id, substituted for $${api_id} in the dashboard."
  type        = string
}

variable "alarms_kms_key_arn" {
  description = "Customer managed key of the alarm topic."
  type        = string
}

variable "alarm_email" {
  description = "Email subscribed to the alarm topic, or null."
  type        = string
  default     = null
}

variable "renames" {
  description = "Dimension name => { name as in names.json => name as deployed }, applied to the dashboard's metrics and the alarms' dimensions."
  type        = map(map(string))
  default     = {}
}
