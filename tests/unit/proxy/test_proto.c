/*
 * Wire checks of our apache.rocketmq.v2 schemas: messages built with the
 * protoc-c code must encode to bytes worked out by hand from the official
 * field numbers, and decode back; the service must expose every RPC under
 * its official name.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "apache/rocketmq/v2/service.pb-c.h"

static void assert_bytes(const uint8_t *got, size_t glen, const uint8_t *want, size_t wlen)
{
    ck_assert_uint_eq(glen, wlen);
    for (size_t i = 0; i < wlen; i++)
        ck_assert_msg(got[i] == want[i], "byte %zu: got %02x want %02x", i, got[i], want[i]);
}

START_TEST(test_send_message_request_bytes)
{
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    topic.name = (char *)"T";
    Apache__Rocketmq__V2__Message__UserPropertiesEntry up =
        APACHE__ROCKETMQ__V2__MESSAGE__USER_PROPERTIES_ENTRY__INIT;
    up.key = (char *)"k";
    up.value = (char *)"v";
    Apache__Rocketmq__V2__Message__UserPropertiesEntry *ups[] = { &up };
    Google__Protobuf__Timestamp born = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    born.seconds = 1;
    char *keys[] = { (char *)"K" };
    Apache__Rocketmq__V2__SystemProperties sp = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__INIT;
    sp.opt_tag_case = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_TAG_TAG;
    sp.tag = (char *)"a";
    sp.n_keys = 1;
    sp.keys = keys;
    sp.message_id = (char *)"M";
    sp.body_encoding = APACHE__ROCKETMQ__V2__ENCODING__IDENTITY;
    sp.message_type = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL;
    sp.born_timestamp = &born;
    sp.born_host = (char *)"h";
    sp.opt_queue_offset_case = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_QUEUE_OFFSET_QUEUE_OFFSET;
    sp.queue_offset = 5;
    /* Explicit presence: a set zero is still encoded. */
    sp.opt_delivery_attempt_case =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_DELIVERY_ATTEMPT_DELIVERY_ATTEMPT;
    sp.delivery_attempt = 0;
    sp.opt_message_group_case = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_MESSAGE_GROUP_MESSAGE_GROUP;
    sp.message_group = (char *)"g";
    Apache__Rocketmq__V2__Message m = APACHE__ROCKETMQ__V2__MESSAGE__INIT;
    m.topic = &topic;
    m.n_user_properties = 1;
    m.user_properties = ups;
    m.system_properties = &sp;
    m.body.data = (uint8_t *)"xy";
    m.body.len = 2;
    Apache__Rocketmq__V2__Message *ms[] = { &m };
    Apache__Rocketmq__V2__SendMessageRequest req = APACHE__ROCKETMQ__V2__SEND_MESSAGE_REQUEST__INIT;
    req.n_messages = 1;
    req.messages = ms;

    static const uint8_t want[] = {
        0x0a, 0x30,                                     /* messages (1), 48 bytes */
        0x0a, 0x03, 0x12, 0x01, 'T',                    /* topic (1) { name (2) } */
        0x12, 0x06, 0x0a, 0x01, 'k', 0x12, 0x01, 'v',   /* user_properties (2) entry */
        0x1a, 0x1d,                                     /* system_properties (3), 29 bytes */
        0x0a, 0x01, 'a',                                /* tag (1) */
        0x12, 0x01, 'K',                                /* keys (2) */
        0x1a, 0x01, 'M',                                /* message_id (3) */
        0x28, 0x01,                                     /* body_encoding (5) IDENTITY */
        0x30, 0x01,                                     /* message_type (6) NORMAL */
        0x3a, 0x02, 0x08, 0x01,                         /* born_timestamp (7) { seconds 1 } */
        0x42, 0x01, 'h',                                /* born_host (8) */
        0x70, 0x05,                                     /* queue_offset (14) */
        0x80, 0x01, 0x00,                               /* delivery_attempt (16) = 0 */
        0x8a, 0x01, 0x01, 'g',                          /* message_group (17) */
        0x22, 0x02, 'x', 'y',                           /* body (4) */
    };
    uint8_t out[128];
    size_t n = apache__rocketmq__v2__send_message_request__get_packed_size(&req);
    ck_assert_uint_le(n, sizeof(out));
    apache__rocketmq__v2__send_message_request__pack(&req, out);
    assert_bytes(out, n, want, sizeof(want));

    Apache__Rocketmq__V2__SendMessageRequest *back =
        apache__rocketmq__v2__send_message_request__unpack(NULL, sizeof(want), want);
    ck_assert_ptr_nonnull(back);
    Apache__Rocketmq__V2__SystemProperties *bsp = back->messages[0]->system_properties;
    ck_assert_int_eq(bsp->opt_delivery_attempt_case,
                     APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_DELIVERY_ATTEMPT_DELIVERY_ATTEMPT);
    ck_assert_int_eq(bsp->opt_receipt_handle_case,
                     APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_RECEIPT_HANDLE__NOT_SET);
    ck_assert_str_eq(bsp->message_group, "g");
    ck_assert_int_eq(bsp->queue_offset, 5);
    ck_assert_str_eq(back->messages[0]->user_properties[0]->key, "k");
    apache__rocketmq__v2__send_message_request__free_unpacked(back, NULL);
}
END_TEST

START_TEST(test_telemetry_settings_bytes)
{
    Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
    st.code = APACHE__ROCKETMQ__V2__CODE__OK;
    Google__Protobuf__Duration to = GOOGLE__PROTOBUF__DURATION__INIT;
    to.seconds = 3;
    Apache__Rocketmq__V2__Publishing pub = APACHE__ROCKETMQ__V2__PUBLISHING__INIT;
    pub.max_body_size = 4 * 1024 * 1024;
    pub.validate_message_type = 1;
    Apache__Rocketmq__V2__UA ua = APACHE__ROCKETMQ__V2__UA__INIT;
    ua.language = APACHE__ROCKETMQ__V2__LANGUAGE__JAVA;
    Apache__Rocketmq__V2__Settings set = APACHE__ROCKETMQ__V2__SETTINGS__INIT;
    set.opt_client_type_case = APACHE__ROCKETMQ__V2__SETTINGS__OPT_CLIENT_TYPE_CLIENT_TYPE;
    set.client_type = APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER;
    set.request_timeout = &to;
    set.pub_sub_case = APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_PUBLISHING;
    set.publishing = &pub;
    set.user_agent = &ua;
    Apache__Rocketmq__V2__TelemetryCommand cmd = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;
    cmd.status = &st;
    cmd.command_case = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS;
    cmd.settings = &set;

    static const uint8_t want[] = {
        0x0a, 0x04, 0x08, 0xa0, 0x9c, 0x01,             /* status (1) { code 20000 } */
        0x12, 0x13,                                     /* settings (2), 19 bytes */
        0x08, 0x01,                                     /* client_type (1) PRODUCER */
        0x22, 0x02, 0x08, 0x03,                         /* request_timeout (4) { 3 s } */
        0x2a, 0x07, 0x10, 0x80, 0x80, 0x80, 0x02,       /* publishing (5) { max_body_size (2) */
        0x18, 0x01,                                     /*   validate_message_type (3) } */
        0x3a, 0x02, 0x08, 0x01,                         /* user_agent (7) { language JAVA } */
    };
    uint8_t out[64];
    size_t n = apache__rocketmq__v2__telemetry_command__get_packed_size(&cmd);
    ck_assert_uint_le(n, sizeof(out));
    apache__rocketmq__v2__telemetry_command__pack(&cmd, out);
    assert_bytes(out, n, want, sizeof(want));
}
END_TEST

START_TEST(test_response_oneofs_bytes)
{
    /* ReceiveMessageResponse.delivery_timestamp (3), PullMessageResponse.next_offset (3),
     * ChangeInvisibleDurationRequest.suspend (7) and lite_topic (6). */
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.nanos = 1;
    Apache__Rocketmq__V2__ReceiveMessageResponse r = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__INIT;
    r.content_case = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_DELIVERY_TIMESTAMP;
    r.delivery_timestamp = &ts;
    uint8_t out[32];
    static const uint8_t w1[] = { 0x1a, 0x02, 0x10, 0x01 };
    size_t n = apache__rocketmq__v2__receive_message_response__pack(&r, out);
    assert_bytes(out, n, w1, sizeof(w1));

    Apache__Rocketmq__V2__PullMessageResponse p = APACHE__ROCKETMQ__V2__PULL_MESSAGE_RESPONSE__INIT;
    p.content_case = APACHE__ROCKETMQ__V2__PULL_MESSAGE_RESPONSE__CONTENT_NEXT_OFFSET;
    p.next_offset = 300;
    static const uint8_t w2[] = { 0x18, 0xac, 0x02 };
    n = apache__rocketmq__v2__pull_message_response__pack(&p, out);
    assert_bytes(out, n, w2, sizeof(w2));

    Apache__Rocketmq__V2__ChangeInvisibleDurationRequest c =
        APACHE__ROCKETMQ__V2__CHANGE_INVISIBLE_DURATION_REQUEST__INIT;
    c.receipt_handle = (char *)"r";
    c.opt_lite_topic_case =
        APACHE__ROCKETMQ__V2__CHANGE_INVISIBLE_DURATION_REQUEST__OPT_LITE_TOPIC_LITE_TOPIC;
    c.lite_topic = (char *)"";
    c.opt_suspend_case = APACHE__ROCKETMQ__V2__CHANGE_INVISIBLE_DURATION_REQUEST__OPT_SUSPEND_SUSPEND;
    c.suspend = 1;
    static const uint8_t w3[] = { 0x1a, 0x01, 'r', 0x32, 0x00, 0x38, 0x01 };
    n = apache__rocketmq__v2__change_invisible_duration_request__pack(&c, out);
    assert_bytes(out, n, w3, sizeof(w3));
}
END_TEST

START_TEST(test_messaging_service_rpcs)
{
    static const char *const rpcs[][3] = {
        { "QueryRoute", "QueryRouteRequest", "QueryRouteResponse" },
        { "Heartbeat", "HeartbeatRequest", "HeartbeatResponse" },
        { "SendMessage", "SendMessageRequest", "SendMessageResponse" },
        { "QueryAssignment", "QueryAssignmentRequest", "QueryAssignmentResponse" },
        { "ReceiveMessage", "ReceiveMessageRequest", "ReceiveMessageResponse" },
        { "AckMessage", "AckMessageRequest", "AckMessageResponse" },
        { "ForwardMessageToDeadLetterQueue", "ForwardMessageToDeadLetterQueueRequest",
          "ForwardMessageToDeadLetterQueueResponse" },
        { "PullMessage", "PullMessageRequest", "PullMessageResponse" },
        { "UpdateOffset", "UpdateOffsetRequest", "UpdateOffsetResponse" },
        { "GetOffset", "GetOffsetRequest", "GetOffsetResponse" },
        { "QueryOffset", "QueryOffsetRequest", "QueryOffsetResponse" },
        { "EndTransaction", "EndTransactionRequest", "EndTransactionResponse" },
        { "Telemetry", "TelemetryCommand", "TelemetryCommand" },
        { "NotifyClientTermination", "NotifyClientTerminationRequest",
          "NotifyClientTerminationResponse" },
        { "ChangeInvisibleDuration", "ChangeInvisibleDurationRequest",
          "ChangeInvisibleDurationResponse" },
        { "RecallMessage", "RecallMessageRequest", "RecallMessageResponse" },
        { "SyncLiteSubscription", "SyncLiteSubscriptionRequest", "SyncLiteSubscriptionResponse" },
    };
    const ProtobufCServiceDescriptor *d = &apache__rocketmq__v2__messaging_service__descriptor;
    ck_assert_str_eq(d->name, "apache.rocketmq.v2.MessagingService");
    size_t n = sizeof(rpcs) / sizeof(rpcs[0]);
    ck_assert_uint_eq(d->n_methods, n);
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMethodDescriptor *m = protobuf_c_service_descriptor_get_method_by_name(d, rpcs[i][0]);
        ck_assert_msg(m != NULL, "missing rpc %s", rpcs[i][0]);
        ck_assert_str_eq(m->input->short_name, rpcs[i][1]);
        ck_assert_str_eq(m->output->short_name, rpcs[i][2]);
        ck_assert_str_eq(m->input->package_name, "apache.rocketmq.v2");
    }
}
END_TEST

START_TEST(test_code_values)
{
    /* A sample across the Code ranges, decoded from the wire by number. */
    static const struct { const char *name; int value; } codes[] = {
        { "OK", 20000 }, { "MULTIPLE_RESULTS", 30000 }, { "BAD_REQUEST", 40000 },
        { "ILLEGAL_LITE_TOPIC", 40020 }, { "UNAUTHORIZED", 40100 }, { "MESSAGE_NOT_FOUND", 40401 },
        { "REQUEST_TIMEOUT", 40800 }, { "TOO_MANY_REQUESTS", 42900 },
        { "MESSAGE_PROPERTIES_TOO_LARGE", 43101 }, { "INTERNAL_SERVER_ERROR", 50001 },
        { "PROXY_TIMEOUT", 50400 }, { "VERIFY_FIFO_MESSAGE_UNSUPPORTED", 50502 },
        { "FAILED_TO_CONSUME_MESSAGE", 60000 },
    };
    const ProtobufCEnumDescriptor *e = &apache__rocketmq__v2__code__descriptor;
    ck_assert_uint_eq(e->n_values, 53);
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(e, codes[i].name);
        ck_assert_msg(v != NULL, "missing code %s", codes[i].name);
        ck_assert_int_eq(v->value, codes[i].value);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rocketmq_proto");
    TCase *tc = tcase_create("wire");
    tcase_add_test(tc, test_send_message_request_bytes);
    tcase_add_test(tc, test_telemetry_settings_bytes);
    tcase_add_test(tc, test_response_oneofs_bytes);
    tcase_add_test(tc, test_messaging_service_rpcs);
    tcase_add_test(tc, test_code_values);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
