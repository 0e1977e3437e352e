"""A generic gRPC client of hangar's Fleet service, as a Python user writes it.

grpcio with default channel settings over unix://SOCKET, the message types
learnt by server reflection (no generated stubs, no hangar code), error
details read with grpcio-status. Calls ListNodes and List, then Create of a
name that exists and Drain of a node that does not. Prints one JSON object;
crates/cli/tests/fleet.rs asserts on it.

Usage: fleet_client.py SOCKET EXISTING_NAME
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


def main(sock, existing):
    out = {}
    with grpc.insecure_channel("unix://" + sock) as ch:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(ch))

        def call(name, body):
            m = pool.FindServiceByName("hangar.v1.Fleet").FindMethodByName(name)
            req = message_factory.GetMessageClass(m.input_type)
            resp = message_factory.GetMessageClass(m.output_type)
            fn = ch.unary_unary(
                f"/hangar.v1.Fleet/{name}",
                request_serializer=req.SerializeToString,
                response_deserializer=resp.FromString,
            )
            try:
                r = fn(json_format.ParseDict(body, req()), timeout=60)
                return {"ok": json_format.MessageToDict(r, preserving_proto_field_name=True)}
            except grpc.RpcError as e:
                return {"error": error(e)}

        out["nodes"] = call("ListNodes", {})
        out["list"] = call("List", {})
        out["duplicate"] = call("Create", {"feature": "demo", "name": existing})
        out["no_node"] = call("Drain", {"node": "no-such-node"})
    print(json.dumps(out))


def error(e):
    res = {"code": e.code().name, "message": e.details()}
    st = rpc_status.from_call(e)
    for d in st.details if st else []:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            res["reason"] = info.reason
        elif d.Is(error_details_pb2.Help.DESCRIPTOR):
            h = error_details_pb2.Help()
            d.Unpack(h)
            res["help"] = [l.description for l in h.links]
    return res


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
