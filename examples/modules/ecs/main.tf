# Reference ecs module — elastic compute (云服务器): offline, only OpenTofu's built-in terraform_data.
# Interface: docs/iac.md.

locals {
  names = [for i in range(var.instance_count) : "${var.name_prefix}-${i}"]
  # A /16 chosen by the name, so addresses are stable across plans and differ between items.
  subnet      = cidrsubnet("10.0.0.0/8", 8, parseint(substr(sha256(var.name_prefix), 0, 2), 16))
  private_ips = [for i in range(var.instance_count) : cidrhost(local.subnet, 10 + i)]
}

# One per instance; `input` carries the spec, so a change of size shows in the plan.
resource "terraform_data" "instance" {
  count = var.instance_count

  input = {
    name        = local.names[count.index]
    sku         = var.sku
    vcpu        = var.vcpu
    memory_gib  = var.memory_gib
    storage_gib = var.storage_gib
    region      = var.region
    private_ip  = local.private_ips[count.index]
    tags        = var.tags
  }
}
