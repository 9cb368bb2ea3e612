"""Policy pack `memos-policies`: the rules of lib/policy_rules.py on every `pulumi preview` and `up`.

    pulumi preview --stack prod --policy-pack policy

The pack runs in its own environment (policy/pyproject.toml: pulumi-policy pins a protobuf that the
program's environment does not use); the rules themselves are plain functions in the repository's
lib/ package, shared with the offline check. Violations are mandatory: they stop the deployment.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from lib.policy_rules import RULES, STACK_RULES, PolicyResource, Rule, StackRule


def validator(rule: Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in rule.types:
            return
        resource = PolicyResource(
            type=args.resource_type,
            name=args.name,
            urn=args.urn,
            props=args.props,
            protect=bool(args.opts.protect),
        )
        for message in rule.check(resource):
            report_violation(message, None)

    return validate


def stack_validator(rule: StackRule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [
            PolicyResource(type=r.resource_type, name=r.name, urn=r.urn, props=r.props, protect=bool(r.opts.protect))
            for r in args.resources
        ]
        for message in rule.check(resources):
            report_violation(message, None)

    return validate


PolicyPack(
    name="memos-policies",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        *(
            ResourceValidationPolicy(name=rule.name, description=rule.description, validate=validator(rule))
            for rule in RULES
        ),
        *(
            StackValidationPolicy(name=rule.name, description=rule.description, validate=stack_validator(rule))
            for rule in STACK_RULES
        ),
    ],
)
