# SPDX-License-Identifier: Apache-2.0
"""OCCO utilities."""
