"""A generic gRPC client of hangar's control socket, as a Python user writes it.

grpcio with default channel settings over unix://SOCKET, every message type
learnt by server reflection (no generated stubs, no hangar code), error details
read with grpcio-status. Prints one JSON object with what it saw; the Rust test
(crates/cli/tests/grpc_clients.rs) asserts on it.

Usage: grpc_client.py SOCKET
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status


def main(sock):
    out = {}
    # Default settings: no grpc.default_authority, so grpc-core sends the
    # socket path as :authority.
    with grpc.insecure_channel("unix://" + sock) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)  # grpc.reflection.v1alpha
        out["services_v1alpha"] = sorted(db.get_services())
        pool = descriptor_pool.DescriptorPool(db)

        def method(service, name):
            m = pool.FindServiceByName(service).FindMethodByName(name)
            req = message_factory.GetMessageClass(m.input_type)
            resp = message_factory.GetMessageClass(m.output_type)
            return m, req, resp

        def call(service, name, body):
            _, req, resp = method(service, name)
            fn = ch.unary_unary(
                f"/{service}/{name}",
                request_serializer=req.SerializeToString,
                response_deserializer=resp.FromString,
            )
            try:
                r = fn(json_format.ParseDict(body, req()), timeout=60)
                return {"ok": json_format.MessageToDict(r, preserving_proto_field_name=True)}
            except grpc.RpcError as e:
                return {"error": error(e)}

        # grpc.reflection.v1, its messages also learnt by reflection.
        m, req, resp = method("grpc.reflection.v1.ServerReflection", "ServerReflectionInfo")
        fn = ch.stream_stream(
            f"/grpc.reflection.v1.ServerReflection/{m.name}",
            request_serializer=req.SerializeToString,
            response_deserializer=resp.FromString,
        )
        replies = list(fn(iter([json_format.ParseDict({"list_services": ""}, req())]), timeout=60))
        out["services_v1"] = sorted(
            s.name for r in replies for s in r.list_services_response.service
        )

        out["status"] = call("hangar.v1.Daemon", "Status", {})
        out["list"] = call("hangar.v1.Processes", "List", {})
        out["missing_instance"] = call("hangar.v1.Instances", "Get", {"id_or_name": "nope"})
        out["missing_process"] = call("hangar.v1.Processes", "Get", {"name": "nope"})
        out["unknown_feature"] = call(
            "hangar.v1.Instances", "Create", {"feature": "no-such-feature", "name": "x"}
        )
        out["invalid_spec"] = call(
            "hangar.v1.Processes",
            "Add",
            {"toml": '[[process]]\nname = "bad"\ncommand = "sleep"\ninstances = 0\n'},
        )
        # Pages: every process once, one per page, by name.
        pages, token = [], ""
        while True:
            r = call("hangar.v1.Processes", "List", {"page_size": 1, "page_token": token})
            if "ok" not in r:
                pages.append(r)
                break
            pages.append([p["name"] for p in r["ok"].get("processes", [])])
            token = r["ok"].get("next_page_token", "")
            if not token or len(pages) > 10:
                break
        out["pages"] = pages
        out["bad_page_token"] = call(
            "hangar.v1.Processes", "List", {"page_size": 1, "page_token": "not-ours"}
        )
        # Event details as a structured google.protobuf.Struct.
        out["history"] = call("hangar.v1.Events", "History", {})
        # The catalog: every feature, and a feature that is not there.
        out["catalog_list"] = call("hangar.v1.Catalog", "List", {})
        out["missing_feature"] = call("hangar.v1.Catalog", "Get", {"id": "no-such-feature"})
    print(json.dumps(out))


def error(e):
    """A failed call as a generic client sees it: code, message, and the
    google.rpc.Status details."""
    res = {"code": e.code().name, "message": e.details()}
    st = rpc_status.from_call(e)
    if st is None:
        return res
    for d in st.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            res["error_info"] = {
                "reason": info.reason,
                "domain": info.domain,
                "metadata": dict(info.metadata),
            }
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            d.Unpack(bad)
            res["bad_request"] = [
                {"field": v.field, "description": v.description} for v in bad.field_violations
            ]
        elif d.Is(error_details_pb2.Help.DESCRIPTOR):
            h = error_details_pb2.Help()
            d.Unpack(h)
            res["help"] = [l.description for l in h.links]
    return res


if __name__ == "__main__":
    main(sys.argv[1])
