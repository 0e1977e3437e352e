//! grpc transport (in progress).
