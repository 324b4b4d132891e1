#include <gtest/gtest.h>

#include "controlplane/controlplane.h"

namespace qbridge::cp {
namespace {

constexpr uint64_t kS = dp::kSecNs;

TEST(ValidateBridgeTimers, AcceptsTheRecommendedSettings) {
  // mqtt-over-quic.md 3.3: keepalive 60 s, quic_keepalive <= idle / 2, idle > 1.5 x keepalive.
  EXPECT_TRUE(ValidateBridgeTimers("emqx", 60 * kS, 60 * kS, 120 * kS).ok());
  EXPECT_TRUE(ValidateBridgeTimers("emqx", 60 * kS, 0, 120 * kS).ok());  // QUIC PINGs off
  EXPECT_TRUE(ValidateBridgeTimers("emqx", 60 * kS, 120 * kS, 0).ok());  // idle timeout off
}

TEST(ValidateBridgeTimers, RejectsQuicKeepaliveNotBelowIdleTimeout) {
  // The incident write-ups' own advice (120 s and 120 s) leaves no slack.
  const absl::Status s = ValidateBridgeTimers("emqx", 60 * kS, 120 * kS, 120 * kS);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("bridges.mqtt.emqx.quic_keepalive"), std::string::npos) << s;
  EXPECT_NE(s.message().find("bridges.mqtt.emqx.quic_idle_timeout"), std::string::npos) << s;
  EXPECT_NE(s.message().find("half"), std::string::npos) << s;
}

TEST(ValidateBridgeTimers, RejectsMqttKeepaliveOutlivingQuicIdleTimeout) {
  const absl::Status s = ValidateBridgeTimers("edge", 80 * kS, 30 * kS, 120 * kS);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("bridges.mqtt.edge.keepalive"), std::string::npos) << s;
  EXPECT_NE(s.message().find("bridges.mqtt.edge.quic_idle_timeout"), std::string::npos) << s;
  EXPECT_FALSE(ValidateBridgeTimers("edge", 80 * kS, 30 * kS, 120 * kS).ok());  // = 1.5 x 80
  EXPECT_TRUE(ValidateBridgeTimers("edge", 80 * kS, 30 * kS, 120 * kS + 1).ok());
}

}  // namespace
}  // namespace qbridge::cp
