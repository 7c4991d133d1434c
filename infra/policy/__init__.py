"""The policy pack: guardrails checked on what a stack declares, at `pulumi preview` and
`pulumi up --policy-pack infra/policy`.

`rules` holds the rules as pure functions over plain data (no Pulumi import); `pack`
adapts them to pulumi-policy, which runs in the pack's own virtualenv (PulumiPolicy.yaml).
"""
