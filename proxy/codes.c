/*
 * Status codes: how a broker's remoting answer or a transport failure is
 * told to a gRPC client, as RocketMQ's proxy does (business errors travel in
 * the response's Status with grpc-status OK). Transport failures to a broker
 * are INTERNAL_SERVER_ERROR / PROXY_TIMEOUT, which clients treat as
 * retriable.
 */
#include <errno.h>

#include "proxy.h"

px_code px_code_from_remoting(enum px_rop op, int c)
{
    switch (c) {
    case RMT_RESP_SUCCESS: return PXC(OK);
    case RMT_RESP_FLUSH_DISK_TIMEOUT: return PXC(MASTER_PERSISTENCE_TIMEOUT);
    case RMT_RESP_FLUSH_SLAVE_TIMEOUT: return PXC(SLAVE_PERSISTENCE_TIMEOUT);
    case RMT_RESP_SLAVE_NOT_AVAILABLE: return PXC(HA_NOT_AVAILABLE);
    case RMT_RESP_MESSAGE_ILLEGAL: return op == PX_ROP_SEND ? PXC(MESSAGE_CORRUPTED) : PXC(BAD_REQUEST);
    case RMT_RESP_INVALID_PARAMETER: return PXC(BAD_REQUEST);
    case RMT_RESP_TOPIC_NOT_EXIST: return PXC(TOPIC_NOT_FOUND);
    case RMT_RESP_SUBSCRIPTION_GROUP_NOT_EXIST: return PXC(CONSUMER_GROUP_NOT_FOUND);
    case RMT_RESP_NO_PERMISSION: return PXC(FORBIDDEN);
    case RMT_RESP_SYSTEM_BUSY:
    case RMT_RESP_FLOW_CONTROL:
    case RMT_RESP_POLLING_FULL: return PXC(TOO_MANY_REQUESTS);
    case RMT_RESP_SUBSCRIPTION_PARSE_FAILED:
    case RMT_RESP_FILTER_DATA_NOT_EXIST: return PXC(ILLEGAL_FILTER_EXPRESSION);
    case RMT_RESP_SUBSCRIPTION_NOT_EXIST:
    case RMT_RESP_SUBSCRIPTION_NOT_LATEST: return PXC(ILLEGAL_FILTER_EXPRESSION);
    case RMT_RESP_PULL_NOT_FOUND:
    case RMT_RESP_POLLING_TIMEOUT:
    case RMT_RESP_NO_MESSAGE:
        if (op == PX_ROP_ACK || op == PX_ROP_CHANGE_INVISIBLE)
            return PXC(INVALID_RECEIPT_HANDLE);
        return PXC(MESSAGE_NOT_FOUND);
    case RMT_RESP_PULL_RETRY_IMMEDIATELY: return PXC(MESSAGE_NOT_FOUND);
    case RMT_RESP_PULL_OFFSET_MOVED: return PXC(ILLEGAL_OFFSET);
    case RMT_RESP_QUERY_NOT_FOUND: return op == PX_ROP_OFFSET ? PXC(OFFSET_NOT_FOUND) : PXC(NOT_FOUND);
    case RMT_RESP_REQUEST_CODE_NOT_SUPPORTED: return PXC(NOT_IMPLEMENTED);
    case RMT_RESP_VERSION_NOT_SUPPORTED: return PXC(VERSION_UNSUPPORTED);
    case RMT_RESP_SERVICE_NOT_AVAILABLE:
    case RMT_RESP_SYSTEM_ERROR:
    default: return PXC(INTERNAL_SERVER_ERROR);
    }
}

px_code px_code_from_errno(int err)
{
    switch (err) {
    case 0: return PXC(OK);
    case -ETIMEDOUT: return PXC(PROXY_TIMEOUT);
    case -ENOENT: return PXC(TOPIC_NOT_FOUND);
    case -EINVAL: return PXC(BAD_REQUEST);
    default: return PXC(INTERNAL_SERVER_ERROR);
    }
}

px_code px_code_from_route(int status)
{
    switch (status) {
    case 0: return PXC(OK);
    case -ENOENT: return PXC(TOPIC_NOT_FOUND);
    case -EINVAL: return PXC(ILLEGAL_TOPIC);
    case -ETIMEDOUT: return PXC(PROXY_TIMEOUT);
    default: return PXC(INTERNAL_SERVER_ERROR);
    }
}

const char *px_code_name(px_code c)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&apache__rocketmq__v2__code__descriptor, (int)c);
    return v ? v->name : "UNKNOWN";
}
