"""The migrations of the CRM links table: the Alembic branch ``crm``.

Registered by the ``crm`` plugin (http_crm target) and by ``to_s360`` (s360_contacts target),
which both keep their links there.
"""
