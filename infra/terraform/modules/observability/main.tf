locals {
  # Both files are generated from the metric catalogue and names.json by
  # `cafe cloudwatch render` (see infra/cloudwatch/README.md); this module reads them
  # as they are and only adapts what a deployment changes: names under a prefix, the
  # region, and the API id the dashboard leaves to templatefile().
  dashboard = jsondecode(templatefile("${var.cloudwatch_dir}/dashboard.json", { api_id = var.api_id }))
  alarms    = { for a in jsondecode(file("${var.cloudwatch_dir}/alarms.json")) : a.alarm_name => a }

  # In a metric row ["Namespace", "Metric", "Dim1", "value1", ..., {options}], a value
  # follows its dimension name: rename it if that dimension's map knows it. Elements go
  # through JSON so strings and the options object fit one list.
  widgets = [
    for w in local.dashboard.widgets : merge(w, {
      properties = merge(
        w.properties,
        try({ region = coalesce(var.region, w.properties.region) }, {}),
        try({
          metrics = [
            for row in w.properties.metrics : jsondecode(format("[%s]", join(",", [
              for i, x in row : jsonencode(try(var.renames[row[i - 1]][x], x))
            ])))
          ]
        }, {}),
      )
    })
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = "${var.name_prefix}cafe"
  dashboard_body = jsonencode({ widgets = local.widgets })
}

resource "aws_sns_topic" "alarms" {
  name              = "${var.name_prefix}cafe-alarms"
  kms_master_key_id = var.alarms_kms_key_arn
}

resource "aws_sns_topic_subscription" "email" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each = local.alarms

  alarm_name          = "${var.name_prefix}${each.key}"
  alarm_description   = try(each.value.alarm_description, null)
  namespace           = each.value.namespace
  metric_name         = each.value.metric_name
  dimensions          = { for k, v in try(each.value.dimensions, {}) : k => try(var.renames[k][v], v) }
  statistic           = try(each.value.statistic, null)
  extended_statistic  = try(each.value.extended_statistic, null)
  period              = each.value.period
  evaluation_periods  = each.value.evaluation_periods
  datapoints_to_alarm = try(each.value.datapoints_to_alarm, null)
  threshold           = each.value.threshold
  comparison_operator = each.value.comparison_operator
  treat_missing_data  = try(each.value.treat_missing_data, "missing")

  alarm_actions = [aws_sns_topic.alarms.arn]
  ok_actions    = [aws_sns_topic.alarms.arn]
}
