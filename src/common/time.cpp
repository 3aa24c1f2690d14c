#include "common/time.hpp"

#include <charconv>
#include <cstdio>
#include <ctime>

namespace iothub {
namespace {

bool read_int(std::string_view s, std::size_t pos, std::size_t len, int& out) {
    if (pos + len > s.size()) return false;
    auto [p, ec] = std::from_chars(s.data() + pos, s.data() + pos + len, out);
    return ec == std::errc{} && p == s.data() + pos + len;
}

}  // namespace

// Written digit by digit from the civil calendar: routing stamps every message with one, and
// gmtime and printf (time zone lock, format parsing) cost more than the rest of the stamp.
std::string format_iso8601(sys_time t) {
    using namespace std::chrono;
    const auto day = floor<days>(t);
    const year_month_day ymd{day};
    const hh_mm_ss time{floor<nanoseconds>(t - day)};
    const auto ticks = time.subseconds().count() / 100;  // 100 ns units
    std::string out(28, '0');                            // YYYY-MM-DDThh:mm:ss.fffffffZ
    auto put = [&out](std::size_t at, long long value, int width) {
        for (int i = width - 1; i >= 0; --i, value /= 10)
            out[at + static_cast<std::size_t>(i)] = static_cast<char>('0' + value % 10);
    };
    const int y = static_cast<int>(ymd.year());
    if (y < 0 || y > 9999) {  // outside what the format can say: the old way, signs and all
        const auto secs = floor<seconds>(t);
        std::time_t tt = system_clock::to_time_t(time_point_cast<system_clock::duration>(secs));
        std::tm tm{};
        gmtime_r(&tt, &tm);
        char buf[64];
        std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%07lldZ", tm.tm_year + 1900,
                      tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                      static_cast<long long>(ticks));
        return buf;
    }
    put(0, y, 4);
    out[4] = '-';
    put(5, static_cast<unsigned>(ymd.month()), 2);
    out[7] = '-';
    put(8, static_cast<unsigned>(ymd.day()), 2);
    out[10] = 'T';
    put(11, time.hours().count(), 2);
    out[13] = ':';
    put(14, time.minutes().count(), 2);
    out[16] = ':';
    put(17, time.seconds().count(), 2);
    out[19] = '.';
    put(20, ticks, 7);
    out[27] = 'Z';
    return out;
}

std::optional<sys_time> parse_iso8601(std::string_view s) {
    int y, mo, d, h, mi, sec;
    if (s.size() < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return std::nullopt;
    if (!read_int(s, 0, 4, y) || !read_int(s, 5, 2, mo) || !read_int(s, 8, 2, d) ||
        !read_int(s, 11, 2, h) || !read_int(s, 14, 2, mi) || !read_int(s, 17, 2, sec))
        return std::nullopt;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return std::nullopt;
    std::size_t pos = 19;
    long long nanos = 0;
    if (pos < s.size() && s[pos] == '.') {
        ++pos;
        int digits = 0;
        while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
            if (digits < 9) {
                nanos = nanos * 10 + (s[pos] - '0');
                ++digits;
            }
            ++pos;
        }
        if (digits == 0) return std::nullopt;
        for (; digits < 9; ++digits) nanos *= 10;
    }
    int offset_minutes = 0;
    if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
        ++pos;
    } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
        int oh, om;
        if (pos + 6 > s.size() || s[pos + 3] != ':' || !read_int(s, pos + 1, 2, oh) ||
            !read_int(s, pos + 4, 2, om))
            return std::nullopt;
        offset_minutes = (oh * 60 + om) * (s[pos] == '-' ? -1 : 1);
        pos += 6;
    } else {
        return std::nullopt;
    }
    if (pos != s.size()) return std::nullopt;
    using namespace std::chrono;
    auto ymd = year{y} / month{static_cast<unsigned>(mo)} / day{static_cast<unsigned>(d)};
    if (!ymd.ok()) return std::nullopt;
    sys_time t = sys_days{ymd} + hours{h} + minutes{mi} + seconds{sec} + nanoseconds{nanos};
    return t - minutes{offset_minutes};
}

}  // namespace iothub
