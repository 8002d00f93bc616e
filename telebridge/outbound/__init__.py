"""Outbound calls: one call placed through a carrier's REST API, and campaigns of many, paced and
resumable.

One call: `request` (what is asked, checked; the signed callback URLs), `placers` (the carriers'
REST SDKs), `placing` (the `Dialer`), `verdicts` (what became of the call, from the call log).
Campaigns: `campaign_plan` (how it runs), `campaign_csv` (the list in, the results out),
`campaign_state` (`CampaignStore` and the SQLite state file), `campaign_pg` and
`campaign_pg_schema` (the state in PostgreSQL, loaded only for a `TELEBRIDGE_DB` URL),
`campaign_store` (`start`, `resume`: which store), `campaign` (the runner and its entry points).

May import: `telebridge.carriers` (REST clients and paths), `telebridge.calllog` (`campaign_pg*`:
also `calllog.postgres`, its connections), `telebridge.flows` and the root modules. Used by the
CLI; never by the server or the call core.
"""
