#include "mqtt/qos.h"

#include <gtest/gtest.h>

#include <string>

namespace qbridge::mqtt {
namespace {

TEST(PacketIdAllocator, AllocatesAllIdsThenRefuses) {
  PacketIdAllocator ids;
  std::vector<bool> seen(65536);
  for (int i = 0; i < 65535; ++i) {
    const auto id = ids.Allocate();
    ASSERT_TRUE(id);
    ASSERT_NE(*id, 0);
    ASSERT_FALSE(seen[*id]);
    seen[*id] = true;
  }
  EXPECT_FALSE(ids.Allocate());
  EXPECT_TRUE(ids.Release(1234));
  EXPECT_FALSE(ids.Release(1234));
  EXPECT_FALSE(ids.Release(0));
  EXPECT_EQ(ids.Allocate(), 1234);
}

TEST(PacketIdAllocator, DoesNotReuseAJustReleasedId) {
  PacketIdAllocator ids;
  const auto a = ids.Allocate();
  ASSERT_EQ(a, 1);
  ids.Release(*a);
  EXPECT_EQ(ids.Allocate(), 2);
  EXPECT_TRUE(ids.InUse(2));
  EXPECT_FALSE(ids.InUse(1));
}

TEST(OutboundQos, Qos1Flow) {
  OutboundQos<std::string> out(2);
  const auto id = out.Start(QoS::k1, "m1");
  ASSERT_TRUE(id);
  EXPECT_EQ(out.inflight(), 1u);
  std::string done;
  EXPECT_EQ(out.OnPubcomp(*id, &done), AckOutcome::kWrongState);
  EXPECT_EQ(out.OnPuback(*id, &done), AckOutcome::kCompleted);
  EXPECT_EQ(done, "m1");
  EXPECT_EQ(out.inflight(), 0u);
  EXPECT_EQ(out.OnPuback(*id, &done), AckOutcome::kUnknownId);
}

TEST(OutboundQos, Qos2Flow) {
  OutboundQos<std::string> out;
  const auto id = out.Start(QoS::k2, "m2");
  ASSERT_TRUE(id);
  std::string done;
  EXPECT_EQ(out.OnPuback(*id, &done), AckOutcome::kWrongState);
  EXPECT_EQ(out.OnPubrec(*id, ReasonCode::kSuccess, &done), AckOutcome::kSendPubrel);
  // A repeated PUBREC (our PUBREL was lost) asks for PUBREL again.
  EXPECT_EQ(out.OnPubrec(*id, ReasonCode::kSuccess, &done), AckOutcome::kSendPubrel);
  EXPECT_EQ(out.inflight(), 1u);  // still counts against Receive Maximum
  EXPECT_EQ(out.OnPubcomp(*id, &done), AckOutcome::kCompleted);
  EXPECT_EQ(done, "m2");
}

TEST(OutboundQos, Qos2RefusedByPubrecFailure) {
  OutboundQos<std::string> out;
  const auto id = out.Start(QoS::k2, "m3");
  std::string done;
  EXPECT_EQ(out.OnPubrec(*id, ReasonCode::kQuotaExceeded, &done), AckOutcome::kCompleted);
  EXPECT_EQ(done, "m3");
  EXPECT_EQ(out.inflight(), 0u);
}

TEST(OutboundQos, ReceiveMaximumBoundsTheWindow) {
  OutboundQos<int> out(3);
  std::vector<uint16_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(*out.Start(QoS::k1, i));
  EXPECT_FALSE(out.CanSend());
  EXPECT_FALSE(out.Start(QoS::k1, 99));
  int done;
  EXPECT_EQ(out.OnPuback(ids[1], &done), AckOutcome::kCompleted);
  EXPECT_TRUE(out.Start(QoS::k2, 3));
  out.set_receive_maximum(10);  // a new CONNACK
  EXPECT_TRUE(out.CanSend());
}

TEST(OutboundQos, Qos0NeedsNoStateEvenWithRoom) {
  OutboundQos<int> out(3);
  EXPECT_TRUE(out.CanSend());
  EXPECT_FALSE(out.Start(QoS::k0, 1));
  EXPECT_EQ(out.inflight(), 0u);
}

TEST(OutboundQos, SubscribeSharesThePacketIdSpace) {
  OutboundQos<int> out;
  const auto sub_id = out.ids().Allocate();  // a SUBSCRIBE in flight
  ASSERT_TRUE(sub_id);
  const auto pub_id = out.Start(QoS::k1, 1);
  ASSERT_TRUE(pub_id);
  EXPECT_NE(*pub_id, *sub_id);
  EXPECT_TRUE(out.ids().Release(*sub_id));  // SUBACK
}

TEST(OutboundQos, ResendAfterReconnectKeepsOrderAndStates) {
  OutboundQos<std::string> out;
  const auto a = *out.Start(QoS::k2, "a");
  const auto b = *out.Start(QoS::k1, "b");
  const auto c = *out.Start(QoS::k2, "c");
  std::string done;
  ASSERT_EQ(out.OnPubrec(a, ReasonCode::kSuccess, &done), AckOutcome::kSendPubrel);
  std::vector<std::tuple<uint16_t, OutboundState, std::string>> pending;
  out.ForEachPending([&](uint16_t id, OutboundState s, const std::string& m) {
    pending.emplace_back(id, s, m);
  });
  ASSERT_EQ(pending.size(), 3u);
  EXPECT_EQ(pending[0], std::make_tuple(a, OutboundState::kAwaitPubcomp, std::string("a")));
  EXPECT_EQ(pending[1], std::make_tuple(b, OutboundState::kAwaitPuback, std::string("b")));
  EXPECT_EQ(pending[2], std::make_tuple(c, OutboundState::kAwaitPubrec, std::string("c")));
  std::vector<std::string> dropped;
  out.Clear([&](std::string&& m) { dropped.push_back(m); });
  EXPECT_EQ(dropped.size(), 3u);
  EXPECT_EQ(out.inflight(), 0u);
}

TEST(InboundQos, Qos1DuplicateWhileAckOwedIsNotDeliveredTwice) {
  InboundQos in;
  EXPECT_EQ(in.OnPublish(0, QoS::k1, 5).kind, InboundDecision::kDeliver);
  EXPECT_EQ(in.OnPublish(0, QoS::k1, 5).kind, InboundDecision::kDuplicateAckOwed);
  EXPECT_TRUE(in.OnAckSent(0, 5));
  // After PUBACK the id is free: the same id is a new message (spec 4.3.2).
  EXPECT_EQ(in.OnPublish(0, QoS::k1, 5).kind, InboundDecision::kDeliver);
}

TEST(InboundQos, Qos2ExactlyOnce) {
  InboundQos in;
  EXPECT_EQ(in.OnPublish(4, QoS::k2, 9).kind, InboundDecision::kDeliver);
  // Resent before we acknowledged (the upstream has not acked yet): wait, do not ack.
  EXPECT_EQ(in.OnPublish(4, QoS::k2, 9).kind, InboundDecision::kDuplicateAckOwed);
  EXPECT_TRUE(in.OnAckSent(4, 9));  // PUBREC sent
  // The sender did not see PUBREC and resends with DUP: not delivered, PUBREC again.
  EXPECT_EQ(in.OnPublish(4, QoS::k2, 9).kind, InboundDecision::kDuplicateResendAck);
  EXPECT_EQ(in.OnPubrel(4, 9), ReasonCode::kSuccess);
  EXPECT_EQ(in.OnPubrel(4, 9), ReasonCode::kPacketIdentifierNotFound);
  EXPECT_EQ(in.OnPublish(4, QoS::k2, 9).kind, InboundDecision::kDeliver);
}

TEST(InboundQos, StateIsKeyedByStreamAndPacketId) {
  // Two QUIC data streams both use packet id 1: they are different messages.
  InboundQos in;
  EXPECT_EQ(in.OnPublish(4, QoS::k2, 1).kind, InboundDecision::kDeliver);
  EXPECT_EQ(in.OnPublish(8, QoS::k2, 1).kind, InboundDecision::kDeliver);
  EXPECT_EQ(in.pending(), 2u);
  EXPECT_TRUE(in.OnAckSent(8, 1));
  EXPECT_EQ(in.OnPubrel(8, 1), ReasonCode::kSuccess);
  EXPECT_EQ(in.OnPubrel(4, 2), ReasonCode::kPacketIdentifierNotFound);
  EXPECT_EQ(in.CloseStream(4), 1u);
  EXPECT_EQ(in.pending(), 0u);
}

TEST(InboundQos, ReceiveMaximumExceeded) {
  InboundQos in(2);
  EXPECT_EQ(in.OnPublish(0, QoS::k1, 1).kind, InboundDecision::kDeliver);
  EXPECT_EQ(in.OnPublish(0, QoS::k2, 2).kind, InboundDecision::kDeliver);
  EXPECT_EQ(in.OnPublish(0, QoS::k1, 3).kind, InboundDecision::kReceiveMaxExceeded);
  EXPECT_EQ(in.OnPublish(0, QoS::k0, 0).kind, InboundDecision::kDeliver);  // QoS 0 is free
  EXPECT_TRUE(in.OnAckSent(0, 1));
  EXPECT_EQ(in.OnPublish(0, QoS::k1, 3).kind, InboundDecision::kDeliver);
}

TEST(InboundQos, RefusedMessageEndsTheExchange) {
  // An upstream refusal (Quota exceeded) becomes a failing PUBREC: the sender sends no
  // PUBREL and may reuse the id, so the slot and the id must be free again.
  InboundQos in(1);
  EXPECT_EQ(in.OnPublish(0, QoS::k2, 3).kind, InboundDecision::kDeliver);
  EXPECT_TRUE(in.OnAckSent(0, 3, ReasonCode::kQuotaExceeded));
  EXPECT_EQ(in.pending(), 0u);
  EXPECT_EQ(in.OnPublish(0, QoS::k2, 3).kind, InboundDecision::kDeliver);
  EXPECT_TRUE(in.OnAckSent(0, 3, ReasonCode::kNotAuthorized));
  EXPECT_EQ(in.OnPublish(0, QoS::k1, 4).kind, InboundDecision::kDeliver);  // window free
}

TEST(InboundQos, PubrelBeforePubrecIsAProtocolError) {
  InboundQos in;
  EXPECT_EQ(in.OnPublish(0, QoS::k2, 6).kind, InboundDecision::kDeliver);
  EXPECT_EQ(in.OnPubrel(0, 6), ReasonCode::kProtocolError);
  EXPECT_EQ(in.pending(), 1u);  // the message is still ours to acknowledge
  EXPECT_TRUE(in.OnAckSent(0, 6));
  EXPECT_EQ(in.OnPubrel(0, 6), ReasonCode::kSuccess);
}

TEST(InboundQos, PubrelForQos1IdIsNotFound) {
  InboundQos in;
  in.OnPublish(0, QoS::k1, 7);
  EXPECT_EQ(in.OnPubrel(0, 7), ReasonCode::kPacketIdentifierNotFound);
  EXPECT_FALSE(in.OnAckSent(0, 8));
}

}  // namespace
}  // namespace qbridge::mqtt
