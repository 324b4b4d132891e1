#include "controlplane/auth.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "controlplane/password.h"

namespace qbridge::cp {
namespace {

TEST(UserTable, ChecksHashedSecretsAndRemembersSuccesses) {
  auto alice = cp::HashPassword("wonderland");
  ASSERT_TRUE(alice.ok());
  EXPECT_TRUE(alice->starts_with("pbkdf2-sha256$"));
  auto t = UserTable::Parse(absl::StrCat("# users\n\nalice:", *alice, "\n"), "users.txt");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->size(), 1u);
  EXPECT_TRUE((*t)->Check("alice", "wonderland"));
  EXPECT_TRUE((*t)->Check("alice", "wonderland"));
  EXPECT_EQ((*t)->slow_checks(), 1u) << "the second check must come from the cache";
  EXPECT_FALSE((*t)->Check("alice", "Wonderland"));
  EXPECT_FALSE((*t)->Check("bob", "wonderland"));
  EXPECT_FALSE((*t)->Check("alice", ""));
}

TEST(UserTable, RefusesPlainTextAndMalformedLinesWithTheLine) {
  auto plain = UserTable::Parse("alice:secret\n", "users.txt");
  ASSERT_FALSE(plain.ok());
  EXPECT_NE(plain.status().message().find("users.txt:1"), std::string::npos) << plain.status();
  EXPECT_NE(plain.status().message().find("--hash-password"), std::string::npos);
  auto nocolon = UserTable::Parse("# c\nalice\n", "u");
  ASSERT_FALSE(nocolon.ok());
  EXPECT_NE(nocolon.status().message().find("u:2"), std::string::npos);
  auto h = cp::HashPassword("x");
  ASSERT_TRUE(h.ok());
  auto twice = UserTable::Parse(absl::StrCat("a:", *h, "\na:", *h, "\n"), "u");
  EXPECT_FALSE(twice.ok());
  // A hash whose digest was cut short never verifies.
  EXPECT_FALSE(cp::IsPasswordHash(h->substr(0, h->size() - 4)));
  EXPECT_FALSE(cp::VerifyPassword("pbkdf2-sha256$0$AAAAAAAAAAA=$AAAA", "x"));
}

}  // namespace
}  // namespace qbridge::cp
