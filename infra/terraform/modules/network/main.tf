data "aws_region" "current" {}

locals {
  # A closed list of candidate zones: the subnets' zones must not move when AWS adds a
  # zone to the region (that would replace subnets, and everything in them). Local and
  # Wavelength zones never match these names.
  az_candidates = length(var.availability_zones) > 0 ? var.availability_zones : [
    for letter in ["a", "b", "c", "d", "e", "f"] : "${data.aws_region.current.name}${letter}"
  ]
}

data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "zone-name"
    values = local.az_candidates
  }
}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, var.az_count)

  # Every AWS API the workers call, reached privately: there is no NAT and no internet
  # gateway, so these endpoints are the only way out of the VPC.
  interface_endpoints = toset([
    "kinesis-streams",
    "sqs",
    "monitoring",
    "logs",
    "secretsmanager",
    "ecr.api",
    "ecr.dkr",
    "sts",
    "redshift-data",
    "kms",
  ])

  # Database security groups: name => port. Only the workers connect to them.
  stores = {
    aurora      = 5432
    docdb       = 27017
    elasticache = 6379
    memorydb    = 6379
    redshift    = 5439
  }
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = "${var.name_prefix}cafe" }
}

resource "aws_subnet" "private" {
  count = var.az_count

  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, count.index)
  map_public_ip_on_launch = false

  tags = { Name = "${var.name_prefix}cafe-private-${local.azs[count.index]}" }
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id

  tags = { Name = "${var.name_prefix}cafe-private" }
}

resource "aws_route_table_association" "private" {
  count = var.az_count

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

# A VPC's default security group allows all traffic between its members; with no rules
# it allows nothing, so a resource left on it by mistake is isolated, not open.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
}

# ---------------------------------------------------------------------------------------
# Flow logs
# ---------------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/vpc/${var.name_prefix}cafe/flow-logs"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogGroups",
      "logs:DescribeLogStreams",
    ]
    resources = [aws_cloudwatch_log_group.flow_logs.arn, "${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${var.name_prefix}cafe-vpc-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}

resource "aws_flow_log" "this" {
  vpc_id          = aws_vpc.this.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn    = aws_iam_role.flow_logs.arn
}

# ---------------------------------------------------------------------------------------
# Security groups
# ---------------------------------------------------------------------------------------

resource "aws_security_group" "workers" {
  #checkov:skip=CKV2_AWS_5: attached to the ECS services in modules/workers through this module's output; checkov's graph does not follow module outputs.
  name        = "${var.name_prefix}cafe-workers"
  description = "ECS consumer workers: no inbound; outbound only to the VPC endpoints and the read-model stores"
  vpc_id      = aws_vpc.this.id
}

resource "aws_security_group" "endpoints" {
  name        = "${var.name_prefix}cafe-endpoints"
  description = "Interface VPC endpoints: HTTPS from the workers"
  vpc_id      = aws_vpc.this.id
}

resource "aws_security_group" "store" {
  for_each = local.stores

  #checkov:skip=CKV2_AWS_5: attached to the clusters in modules/databases through this module's output; checkov's graph does not follow module outputs.

  name        = "${var.name_prefix}cafe-${each.key}"
  description = "${each.key}: port ${each.value} from the workers only"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "store_from_workers" {
  for_each = local.stores

  security_group_id            = aws_security_group.store[each.key].id
  description                  = "${each.key} clients: the workers"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.workers.id
}

resource "aws_vpc_security_group_egress_rule" "workers_to_store" {
  for_each = local.stores

  security_group_id            = aws_security_group.workers.id
  description                  = "To ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.store[each.key].id
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_workers" {
  security_group_id            = aws_security_group.endpoints.id
  description                  = "AWS APIs from the workers"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.workers.id
}

resource "aws_vpc_security_group_egress_rule" "workers_to_endpoints" {
  security_group_id            = aws_security_group.workers.id
  description                  = "AWS APIs through the interface endpoints"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints.id
}

# Gateway endpoints have no security group: traffic to them is addressed to the
# services' public prefix lists, routed through the endpoint.
resource "aws_vpc_security_group_egress_rule" "workers_to_gateways" {
  for_each = aws_vpc_endpoint.gateway

  security_group_id = aws_security_group.workers.id
  description       = "${each.key} through its gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = each.value.prefix_list_id
}

# ---------------------------------------------------------------------------------------
# VPC endpoints
# ---------------------------------------------------------------------------------------

resource "aws_vpc_endpoint" "gateway" {
  # S3 holds ECR's image layers; DynamoDB holds the leases, parking lot and read models.
  for_each = toset(["dynamodb", "s3"])

  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.${each.key}"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]

  tags = { Name = "${var.name_prefix}cafe-${each.key}" }
}

resource "aws_vpc_endpoint" "interface" {
  for_each = local.interface_endpoints

  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${data.aws_region.current.name}.${each.key}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]

  tags = { Name = "${var.name_prefix}cafe-${each.key}" }
}
