# The node image: a base distribution image with the OS prerequisites, the static
# nodewright binary and its boot unit, optionally with a node spec's assets prebaked.
#
#   cargo build -p nodewright -p nodewright-shim --bins --profile dist --target x86_64-unknown-linux-musl
#   packer build -var kubernetes_version=1.33.4 packer/nodewright.pkr.hcl
#
# Kept to what Packer 1.6 reads (CI validates with Debian's 1.6.6): no
# `packer { required_plugins }` block (amazon-ebs is built into 1.6; later versions
# install it with `packer plugins install github.com/hashicorp/amazon`) and no
# `metadata_options` / `imds_support` (plugin 1.0+). The agent speaks IMDSv2 only, so
# with a newer Packer add `metadata_options { http_tokens = "required" }` and
# `imds_support = "v2.0"` to the source.

variable "region" {
  type        = string
  default     = "us-east-1"
  description = "Region the image is built and registered in."
}

variable "base_image_name" {
  type        = string
  default     = "debian-12-amd64-*"
  description = "Name filter of the base image (the newest match is used)."
}

variable "base_image_owners" {
  type        = list(string)
  default     = ["136693071363"] # Debian's official AWS account
  description = "Accounts allowed to own the base image."
}

variable "ssh_username" {
  type        = string
  default     = "admin"
  description = "Login of the base image (admin on Debian, ubuntu on Ubuntu, ec2-user on Amazon Linux)."
}

variable "architecture" {
  type        = string
  default     = "x86_64"
  description = "x86_64 or arm64; must match the binary."
}

variable "instance_type" {
  type    = string
  default = "m6i.large"
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes version the image is for; names the image and is recorded in it."
}

variable "prebake_spec" {
  type        = string
  default     = ""
  description = "Node spec URL whose assets are baked in (nodewright prebake); empty: none."
}

variable "prebake_args" {
  type        = string
  default     = ""
  description = "Extra arguments for nodewright prebake."
}

variable "extra_packages" {
  type        = string
  default     = ""
  description = "More OS packages to install, space-separated (e.g. \"containerd runc\")."
}

variable "nodewright_binary" {
  type        = string
  default     = "target/x86_64-unknown-linux-musl/dist/nodewright"
  description = "The static binary to bake in (relative to where packer runs)."
}

variable "iam_instance_profile" {
  type        = string
  default     = ""
  description = "Instance profile of the build instance; needed to prebake from s3://."
}

variable "subnet_id" {
  type    = string
  default = ""
}

variable "volume_size_gb" {
  type    = number
  default = 20
}

variable "image_name_prefix" {
  type    = string
  default = "nodewright"
}

locals {
  timestamp  = formatdate("YYYYMMDDhhmmss", timestamp())
  image_name = "${var.image_name_prefix}-k8s-${var.kubernetes_version}-${var.architecture}-${local.timestamp}"
}

source "amazon-ebs" "node" {
  region               = var.region
  instance_type        = var.instance_type
  iam_instance_profile = var.iam_instance_profile
  subnet_id            = var.subnet_id
  ssh_username         = var.ssh_username
  ami_name             = local.image_name
  ami_description      = "Kubernetes ${var.kubernetes_version} node image with nodewright"
  ena_support          = true
  sriov_support        = true

  source_ami_filter {
    filters = {
      name                = var.base_image_name
      architecture        = var.architecture
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = var.base_image_owners
    most_recent = true
  }

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = var.volume_size_gb
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 125
    delete_on_termination = true
    encrypted             = true
  }

  tags = {
    Name                            = local.image_name
    "nodewright/kubernetes-version" = var.kubernetes_version
    "nodewright/prebake-spec"       = var.prebake_spec
    "nodewright/base-image"         = "{{ .SourceAMIName }}"
  }
}

build {
  sources = ["source.amazon-ebs.node"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/nodewright-image/units"]
  }

  provisioner "file" {
    sources = [
      "${path.root}/provision.sh",
      "${path.root}/packages.txt",
    ]
    destination = "/tmp/nodewright-image/"
  }

  provisioner "file" {
    sources = [
      "${path.root}/units/nodewright.service",
      "${path.root}/units/nodewright-watch.service",
    ]
    destination = "/tmp/nodewright-image/units/"
  }

  provisioner "file" {
    source      = var.nodewright_binary
    destination = "/tmp/nodewright-image/nodewright"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo -E env {{ .Vars }} bash {{ .Path }}"
    environment_vars = [
      "NODEWRIGHT_BINARY=/tmp/nodewright-image/nodewright",
      "NODEWRIGHT_PREBAKE_SPEC=${var.prebake_spec}",
      "NODEWRIGHT_PREBAKE_ARGS=${var.prebake_args}",
      "NODEWRIGHT_EXTRA_PACKAGES=${var.extra_packages}",
      "KUBERNETES_VERSION=${var.kubernetes_version}",
    ]
    inline = [
      "bash /tmp/nodewright-image/provision.sh os agent seal",
      "rm -rf /tmp/nodewright-image",
    ]
  }
}
