#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the scidata.replication collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

DOCUMENTATION = r"""
module: globus_collection_info
short_description: Check that Globus collections are ready for replication
version_added: 1.0.0
description:
  - For each collection, reads its endpoint document from Globus Transfer and tries to list each
    given path, then says whether the collection is C(ready) for transfers and, if not, why.
  - This is the preflight check to run before scheduling transfers. It replaces the endpoint
    activation calls of Transfer API v3-era tools, which Globus Connect Server v5 no longer has.
  - The module fails when Globus refuses the credentials (HTTP 401, or 403 for a collection or a
    path), since that is what the check is for. A missing data_access consent is reported as a
    reason instead, with how to add it.
extends_documentation_fragment:
  - scidata.replication._globus
  - scidata.replication._attributes
  - scidata.replication._attributes.info_module
  - scidata.replication._attributes.actiongroup_globus
options:
  collections:
    description:
      - The collections to check.
    type: list
    elements: dict
    required: true
    suboptions:
      id:
        description: The collection (endpoint) id.
        type: str
        required: true
      paths:
        description: Paths on the collection that must be listable.
        type: list
        elements: str
        default: ["/"]
author:
  - Scidata Replication maintainers (@scidata)
"""

EXAMPLES = r"""
- name: Preflight the source and destination collections of a replication
  scidata.replication.globus_collection_info:
    collections:
      - id: 9d6d994a-6d04-11e5-ba46-22000b92c6ec
        paths: [/css03_data/CMIP6/]
      - id: dd1ee92a-6d04-11e5-ba46-22000b92c6ec
        paths: [/esg/replica/]
  register: preflight

- name: Stop when a collection is not ready
  ansible.builtin.assert:
    that: preflight.collections | rejectattr('ready') | list | length == 0
    fail_msg: "{{ preflight.collections | rejectattr('ready') | map(attribute='reasons') | flatten }}"
"""

RETURN = r"""
collections:
  description: One entry per requested collection, in the order given.
  returned: success
  type: list
  elements: dict
  contains:
    id:
      description: The collection id.
      type: str
    display_name:
      description: The collection's display name, when it could be read.
      type: str
    entity_type:
      description: Globus's entity type, for example V(GCSv5_mapped_collection) or V(GCP_mapped_collection).
      type: str
    type:
      description: The kind of collection in words, for example V(GCSv5 mapped collection).
      type: str
    connected:
      description: Whether Globus Connect Personal is connected; V(null) where the API does not report it.
      type: bool
    paused:
      description: Whether Globus Connect Personal is paused; V(null) where the API does not report it.
      type: bool
    paths:
      description: One entry per checked path.
      type: list
      elements: dict
      contains:
        path:
          description: The path.
          type: str
        listable:
          description: Whether the path could be listed.
          type: bool
        error:
          description: Why it could not be listed.
          type: str
    ready:
      description: True when the collection can take part in a transfer and every path is listable.
      type: bool
    reasons:
      description: Why the collection is not ready; empty when it is.
      type: list
      elements: str
  sample:
    - id: 9d6d994a-6d04-11e5-ba46-22000b92c6ec
      display_name: LLNL ESGF
      entity_type: GCSv5_mapped_collection
      type: GCSv5 mapped collection
      connected: null
      paused: null
      paths: [{path: /css03_data/CMIP6/, listable: true, error: null}]
      ready: true
      reasons: []
"""

from ansible_collections.scidata.replication.plugins.module_utils._python_floor import refuse_unsupported_python

try:
    from ansible_collections.scidata.replication.plugins.module_utils._globus import collection_readiness
    from ansible_collections.scidata.replication.plugins.module_utils._module import ReplicationModule
except SyntaxError:
    # A Python too old to compile the collection's code gets the same clear refusal as one that can.
    refuse_unsupported_python()
    raise


def check_collections(module):
    client = module.transfer_client()
    return dict(changed=False, collections=[
        collection_readiness(client, c["id"], c["paths"]) for c in module.params["collections"]])


def main():
    module = ReplicationModule(
        argument_spec=dict(
            collections=dict(type="list", elements="dict", required=True, options=dict(
                id=dict(type="str", required=True),
                paths=dict(type="list", elements="str", default=["/"]),
            )),
        ),
        uses_state=False,
        uses_globus=True,
        supports_check_mode=True,
    )
    module.run(check_collections, lock=False)


if __name__ == "__main__":
    main()
