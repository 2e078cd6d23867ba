"""The job dialects by config name (``jobs.providers.NAME.dialect``) -> adapter class."""

from __future__ import annotations

from syncd.upstream.bulk_sales_orders import BulkSalesOrders
from syncd.upstream.commerce_jobs import CommerceJobs
from syncd.upstream.inventory_jobs import InventoryJobs
from syncd.upstream.job_api import JobApi

DIALECTS: dict[str, type[JobApi]] = {
    cls.dialect: cls for cls in (InventoryJobs, BulkSalesOrders, CommerceJobs)
}
