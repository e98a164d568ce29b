// tests/support/mini_json.hpp — a small strict JSON parser (RFC 8259) for tests that
// check what sluice writes (metrics::to_json, `sluice bench --json`).
//
//   mini_json::value v = mini_json::parse(R"({"a":[1,2.5,"x"]})");
//   double x = v["a"][1].num();   // 2.5
//
// Throws mini_json::error on malformed input, trailing garbage, duplicate object keys,
// or a lookup that does not match the value's type.
#pragma once

#include <cctype>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mini_json {

struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class value {
 public:
  enum class kind { null, boolean, number, string, array, object };

  value() = default;
  [[nodiscard]] kind type() const { return kind_; }
  [[nodiscard]] bool is_null() const { return kind_ == kind::null; }
  [[nodiscard]] bool is_number() const { return kind_ == kind::number; }
  [[nodiscard]] bool is_string() const { return kind_ == kind::string; }
  [[nodiscard]] bool is_array() const { return kind_ == kind::array; }
  [[nodiscard]] bool is_object() const { return kind_ == kind::object; }
  // A number written without fraction or exponent.
  [[nodiscard]] bool is_integer() const {
    return kind_ == kind::number && text_.find_first_of(".eE") == std::string::npos;
  }

  [[nodiscard]] bool boolean() const {
    expect(kind::boolean);
    return bool_;
  }
  [[nodiscard]] double num() const {
    expect(kind::number);
    return number_;
  }
  [[nodiscard]] unsigned long long uint() const {
    if (!is_integer() || text_.front() == '-') throw error("not an unsigned integer: " + text_);
    return std::strtoull(text_.c_str(), nullptr, 10);
  }
  [[nodiscard]] const std::string& str() const {
    expect(kind::string);
    return text_;
  }
  [[nodiscard]] const std::vector<value>& arr() const {
    expect(kind::array);
    return items_;
  }
  [[nodiscard]] std::size_t size() const {
    if (kind_ == kind::array) return items_.size();
    expect(kind::object);
    return members_.size();
  }
  [[nodiscard]] bool has(const std::string& key) const {
    expect(kind::object);
    for (const auto& m : members_)
      if (m.first == key) return true;
    return false;
  }
  const value& operator[](const std::string& key) const {
    expect(kind::object);
    for (const auto& m : members_)
      if (m.first == key) return *m.second;
    throw error("no key: " + key);
  }
  const value& operator[](std::size_t i) const {
    expect(kind::array);
    if (i >= items_.size()) throw error("index out of range");
    return items_[i];
  }
  [[nodiscard]] std::vector<std::string> keys() const {
    expect(kind::object);
    std::vector<std::string> k;
    for (const auto& m : members_) k.push_back(m.first);
    return k;
  }

 private:
  friend class parser;
  void expect(kind k) const {
    if (kind_ != k) throw error("wrong JSON type");
  }
  kind kind_ = kind::null;
  bool bool_ = false;
  double number_ = 0;
  std::string text_;  // string contents, or a number's literal text
  std::vector<value> items_;
  std::vector<std::pair<std::string, std::shared_ptr<value>>> members_;
};

class parser {
 public:
  explicit parser(std::string_view s) : s_(s) {}

  value document() {
    value v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw error("JSON: " + what + " at offset " + std::to_string(pos_));
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  char peek() {
    if (pos_ >= s_.size()) fail("unexpected end");
    return s_[pos_];
  }
  void literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) fail("bad literal");
    pos_ += word.size();
  }

  value parse_value(int depth) {
    if (depth > 64) fail("too deep");
    skip_ws();
    value v;
    const char c = peek();
    if (c == '{') {
      v.kind_ = value::kind::object;
      ++pos_;
      skip_ws();
      if (peek() == '}') {
        ++pos_;
        return v;
      }
      for (;;) {
        skip_ws();
        if (peek() != '"') fail("expected key");
        std::string key = parse_string();
        for (const auto& m : v.members_)
          if (m.first == key) fail("duplicate key " + key);
        skip_ws();
        if (peek() != ':') fail("expected ':'");
        ++pos_;
        v.members_.emplace_back(std::move(key), std::make_shared<value>(parse_value(depth + 1)));
        skip_ws();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        if (peek() == '}') {
          ++pos_;
          return v;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind_ = value::kind::array;
      ++pos_;
      skip_ws();
      if (peek() == ']') {
        ++pos_;
        return v;
      }
      for (;;) {
        v.items_.push_back(parse_value(depth + 1));
        skip_ws();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        if (peek() == ']') {
          ++pos_;
          return v;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind_ = value::kind::string;
      v.text_ = parse_string();
      return v;
    }
    if (c == 't') {
      literal("true");
      v.kind_ = value::kind::boolean;
      v.bool_ = true;
      return v;
    }
    if (c == 'f') {
      literal("false");
      v.kind_ = value::kind::boolean;
      return v;
    }
    if (c == 'n') {
      literal("null");
      return v;
    }
    v.kind_ = value::kind::number;
    v.text_ = parse_number();
    v.number_ = std::strtod(v.text_.c_str(), nullptr);
    return v;
  }

  std::string parse_number() {
    const std::size_t start = pos_;
    auto digits = [&] {
      const std::size_t d = pos_;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
      if (pos_ == d) fail("expected digit");
    };
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else {
      digits();
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      digits();
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      digits();
    }
    return std::string(s_.substr(start, pos_ - start));
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      const char c = peek();
      ++pos_;
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      const char e = peek();
      ++pos_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (pos_ + 4 > s_.size()) fail("short \\u escape");
          const std::string hex(s_.substr(pos_, 4));
          for (char h : hex)
            if (!std::isxdigit(static_cast<unsigned char>(h))) fail("bad \\u escape");
          pos_ += 4;
          const unsigned cp = static_cast<unsigned>(std::strtoul(hex.c_str(), nullptr, 16));
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default: fail("bad escape");
      }
    }
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

inline value parse(std::string_view s) { return parser(s).document(); }

}  // namespace mini_json
