# Reference eip module — elastic public IP (弹性公网IP): offline, only OpenTofu's built-in terraform_data.
# Interface: docs/iac.md.

locals {
  names = [for i in range(var.instance_count) : "${var.name_prefix}-${i}"]
  # Addresses from 198.18.0.0/15 (reserved for benchmarking, never routed), a /22 by name.
  subnet    = cidrsubnet("198.18.0.0/15", 7, parseint(substr(sha256(var.name_prefix), 0, 2), 16) % 128)
  addresses = [for i in range(var.instance_count) : cidrhost(local.subnet, 10 + i)]
}

# One per address; `input` carries the spec, so a change of bandwidth shows in the plan.
resource "terraform_data" "address" {
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
