# Reference slb module — server load balancer (负载均衡): offline, only OpenTofu's built-in terraform_data.
# Interface: docs/iac.md.

locals {
  names = [for i in range(var.instance_count) : "${var.name_prefix}-${i}"]
  # Virtual IPs in a /16 of 172.16.0.0/12 chosen by the name.
  subnet    = cidrsubnet("172.16.0.0/12", 4, parseint(substr(sha256(var.name_prefix), 0, 1), 16))
  addresses = [for i in range(var.instance_count) : cidrhost(local.subnet, 10 + i)]
}

# One per load balancer; `input` carries the spec, so a change of bandwidth shows in the plan.
resource "terraform_data" "instance" {
  count = var.instance_count

  input = {
    name           = local.names[count.index]
    sku            = var.sku
    bandwidth_mbps = var.bandwidth_mbps
    region         = var.region
    address        = local.addresses[count.index]
    tags           = var.tags
  }
}
