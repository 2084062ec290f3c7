"""The type of the documents pure domain functions take and return: a resource as a JSON object
(Chargebee v1 field names), as stored and served."""
from typing import Any

Doc = dict[str, Any]
