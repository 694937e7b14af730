//! Fixed test data made by other programs, kept once for every test: a certificate OpenSSL
//! made and what OpenSSL printed about it. Generated material (fresh keys, certificates) is
//! [`crate::pki`]'s.

use certrelay_core::fingerprint::DigestKind;

/// Made by `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj /CN=vector.test`.
pub const VECTOR_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBgjCCASegAwIBAgIUblgQAShRXxC8+KBMv/CakCL/MTcwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLdmVjdG9yLnRlc3QwHhcNMjYxMTI5MDUxMzU0WhcNMzYxMTI2
MDUxMzU0WjAWMRQwEgYDVQQDDAt2ZWN0b3IudGVzdDBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABEbvMcqJ2sOiyrsHEwA4e8enVOf/zb60gGOw1VY6lGhQvypFHMfY
PiNuenjJKDWwx00lr/ZbDlpl1Hg8PkNo5eSjUzBRMB0GA1UdDgQWBBRF5I7TPn0R
GiHs53HcYY2cteYG9zAfBgNVHSMEGDAWgBRF5I7TPn0RGiHs53HcYY2cteYG9zAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQDZ9Ht+VPuTGBYUEhoz
KIBm8GZb6ZdPqfLM7UWzIPsajwIhAIlDOmqa2mkvGDiiD7eioM6jMMum8T/Z3+G0
HVcwSjeN
-----END CERTIFICATE-----
";

/// `openssl x509 -noout -fingerprint -<digest> -in vector.pem`, for each digest.
pub const VECTOR_OPENSSL_FINGERPRINTS: [(DigestKind, &str); 4] = [
    (
        DigestKind::Md5,
        "md5 Fingerprint=DA:E4:BC:B5:63:1D:C2:2F:B1:14:5A:0B:7A:52:EA:C6\n",
    ),
    (
        DigestKind::Sha1,
        "sha1 Fingerprint=FE:76:BF:61:9C:55:95:15:D7:C0:58:C2:25:C7:E4:75:D0:C8:EB:B1\n",
    ),
    (
        DigestKind::Sha256,
        "sha256 Fingerprint=65:9E:CC:74:1F:93:11:E5:91:86:49:E6:EF:92:0C:43:78:06:3C:A7:49:74:57:\
         61:7D:E4:E5:96:F0:7F:F0:74\n",
    ),
    (
        DigestKind::Sha512,
        "sha512 Fingerprint=61:5D:56:27:5E:72:CF:78:17:88:5D:59:CD:77:15:6A:C2:04:A1:3A:AF:16:1F:\
         FA:BF:8C:E3:08:AC:12:EE:3B:F4:7E:F8:21:00:62:13:08:38:07:EA:E5:CE:88:24:61:BD:EE:C1:DC:\
         2F:5C:8C:C1:53:E4:57:DE:7F:51:2A:3B\n",
    ),
];

/// `openssl x509 -noout -pubkey -in vector.pem | openssl pkey -pubin -outform der |
/// openssl dgst -sha256 -c`: the SHA-256 of the certificate's public key.
pub const VECTOR_OPENSSL_PUBKEY_SHA256: &str =
    "fc:78:d4:64:a0:2b:8b:e2:5a:f6:9e:2c:18:c0:ad:50:0e:61:8f:\
     f4:61:0e:23:2f:af:fe:8b:42:ae:27:40:7e";
