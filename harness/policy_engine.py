"""Drives the policy pack over the analyzer protocol, as the Pulumi engine does; prints JSON.

Run with the pack's own Python (policy/.venv): `python harness/policy_engine.py <port> <cases.json>`;
with `--stack`, cases.json maps a case id to a list of resources, sent together to `AnalyzeStack`.
"""

from __future__ import annotations

import json
import sys

import grpc
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc


def main(port: str, cases_path: str) -> None:
    stub = analyzer_pb2_grpc.AnalyzerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    info = stub.GetAnalyzerInfo(empty_pb2.Empty())
    results: dict[str, object] = {"pack": info.name, "policies": sorted(p.name for p in info.policies), "cases": {}}
    with open(cases_path) as handle:
        cases = json.load(handle)
    for case in cases:
        properties = struct_pb2.Struct()
        properties.update(case["props"])
        response = stub.Analyze(
            analyzer_pb2.AnalyzeRequest(
                type=case["type"],
                name=case["name"],
                urn=case["urn"],
                properties=properties,
                options=analyzer_pb2.AnalyzerResourceOptions(protect=case["protect"]),
            )
        )
        results["cases"][case["id"]] = sorted(  # type: ignore[index]
            (d.policyName, analyzer_pb2.EnforcementLevel.Name(d.enforcementLevel)) for d in response.diagnostics
        )
    print(json.dumps(results))


def analyze_stacks(port: str, cases_path: str) -> None:
    stub = analyzer_pb2_grpc.AnalyzerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    with open(cases_path) as handle:
        cases = json.load(handle)
    results: dict[str, object] = {}
    for case_id, resources in cases.items():
        request = analyzer_pb2.AnalyzeStackRequest()
        for resource in resources:
            properties = struct_pb2.Struct()
            properties.update(resource["props"])
            request.resources.append(
                analyzer_pb2.AnalyzerResource(
                    type=resource["type"], name=resource["name"], urn=resource["urn"], properties=properties,
                    options=analyzer_pb2.AnalyzerResourceOptions(protect=resource["protect"]),
                )
            )  # fmt: skip
        response = stub.AnalyzeStack(request)
        results[case_id] = sorted(
            (d.policyName, analyzer_pb2.EnforcementLevel.Name(d.enforcementLevel)) for d in response.diagnostics
        )
    print(json.dumps(results))


if __name__ == "__main__":
    if sys.argv[3:] == ["--stack"]:
        analyze_stacks(sys.argv[1], sys.argv[2])
    else:
        main(sys.argv[1], sys.argv[2])
