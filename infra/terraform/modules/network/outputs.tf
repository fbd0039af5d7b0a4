output "vpc_id" {
  description = "The VPC."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "Private subnets, one per availability zone."
  value       = aws_subnet.private[*].id
}

output "security_group_ids" {
  description = "Security group by service: workers, endpoints, aurora, docdb, elasticache, memorydb, redshift."
  value = merge(
    { workers = aws_security_group.workers.id, endpoints = aws_security_group.endpoints.id },
    { for k, sg in aws_security_group.store : k => sg.id },
  )
}
