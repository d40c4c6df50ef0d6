// shmcastd refuses settings it cannot run with as Errc::invalid_setting, with a message that
// names the setting and its bounds.
#include <gtest/gtest.h>

#include <string>

#include "bus_files.hpp"
#include "shmcast/error.hpp"

namespace shmcast::daemon {
namespace {

Error refusal(const Limits& limits) {
  try {
    check_limits(limits);
  } catch (const Error& e) {
    return e;
  }
  return Error(Errc::system, "(none thrown)");
}

TEST(Settings, LimitsOutOfBoundsAreAnInvalidSettingNamingTheBound) {
  Limits clients;
  clients.max_clients = 65537;
  const Error too_many = refusal(clients);
  EXPECT_EQ(too_many.code(), Errc::invalid_setting);
  EXPECT_STREQ(too_many.what(), "--max-clients must be between 1 and 65536");

  Limits channel;
  channel.max_channel = 65537;
  const Error too_long = refusal(channel);
  EXPECT_EQ(too_long.code(), Errc::invalid_setting);
  EXPECT_STREQ(too_long.what(), "--max-channel must be at most 65536 bytes");

  Limits total;
  total.max_total_subscriptions = 0;
  const Error none = refusal(total);
  EXPECT_EQ(none.code(), Errc::invalid_setting);
  EXPECT_STREQ(none.what(), "--max-total-subscriptions must be between 1 and 67108864");
}

TEST(Settings, AModeWithWorldBitsIsAnInvalidSetting) {
  try {
    Coordinator coordinator({"settings_test_mode", Limits{}, 0666, std::nullopt});
    FAIL() << "a coordinator started with --mode 0666";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_setting);
    EXPECT_NE(std::string(e.what()).find("--mode 0666"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace shmcast::daemon
