"""A bundled S-360 simulator to rehearse integrations: realistic data and S-360's webhook
behaviour (batching, authentication, resends, abandonment). It is not product code: it plugs into
s360bridge through the entry-point group like any third-party plugin."""
