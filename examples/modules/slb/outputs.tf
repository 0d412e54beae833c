# Reference slb module — server load balancer (负载均衡): offline, only OpenTofu's built-in terraform_data.
# Interface: docs/iac.md.

output "ids" {
  description = "Load balancer ids."
  value       = terraform_data.instance[*].id
}

output "address" {
  description = "Virtual IP of the (first) load balancer."
  value       = local.addresses[0]
}

output "addresses" {
  description = "Virtual IP of each load balancer."
  value       = local.addresses
}

output "tags" {
  description = "Tags put on every load balancer."
  value       = var.tags
}
