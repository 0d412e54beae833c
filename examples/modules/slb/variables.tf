# Reference slb module — server load balancer (负载均衡): offline, only OpenTofu's built-in terraform_data.
# Interface: docs/iac.md.

variable "name_prefix" {
  description = "Prefix of every resource name: <namespace>-<request>-<item>."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", var.name_prefix))
    error_message = "name_prefix must be lower-case letters, digits, '-' and '.', starting and ending with a letter or digit."
  }
}

variable "region" {
  description = "Region of the cloud provider, e.g. nanning-1."
  type        = string
  nullable    = false

  validation {
    condition     = length(trimspace(var.region)) > 0
    error_message = "region must not be empty."
  }
}

variable "tags" {
  description = "Tags put on every resource (yunzhang.io/department, yunzhang.io/request, ...)."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "instance_count" {
  description = "How many identical resources, 1 to 1000."
  type        = number
  default     = 1
  nullable    = false

  validation {
    condition     = var.instance_count >= 1 && var.instance_count <= 1000 && floor(var.instance_count) == var.instance_count
    error_message = "instance_count must be a whole number from 1 to 1000."
  }
}

variable "sku" {
  description = "The provider's SKU / instance class."
  type        = string
  nullable    = false

  validation {
    condition     = length(trimspace(var.sku)) > 0
    error_message = "sku must not be empty."
  }
}

variable "bandwidth_mbps" {
  description = "Bandwidth in Mbps, 1 to 10000; null leaves it to the SKU."
  type        = number
  default     = null

  validation {
    # A conditional, because `||` does not short-circuit: `null >= 1` would be an error.
    condition     = var.bandwidth_mbps == null ? true : (var.bandwidth_mbps >= 1 && var.bandwidth_mbps <= 10000 && floor(var.bandwidth_mbps) == var.bandwidth_mbps)
    error_message = "bandwidth_mbps must be a whole number from 1 to 10000."
  }
}
