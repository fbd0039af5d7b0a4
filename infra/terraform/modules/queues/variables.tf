variable "payments_queue_name" {
  description = "Payment requests queue (names.json `payments_queue`, prefixed)."
  type        = string
}

variable "payments_dlq_name" {
  description = "Its dead-letter queue (names.json `payments_dlq`, prefixed)."
  type        = string
}

variable "max_receive_count" {
  description = "Deliveries before a message is dead-lettered (names.json `payments_max_receive_count`)."
  type        = number

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be between 1 and 1000."
  }
}

variable "payment_timeout_seconds" {
  description = "Timeout of the payment function consuming the queue."
  type        = number

  validation {
    condition     = var.payment_timeout_seconds * 6 <= 43200
    error_message = "6 x payment_timeout_seconds must not exceed 43200 s, the SQS visibility timeout maximum."
  }
}

variable "projector_failures_queue_name" {
  description = "Name of the projector function's on-failure queue; null: none."
  type        = string
  default     = null
}

variable "kms_key_arn" {
  description = "Customer managed key of the queues."
  type        = string
}
