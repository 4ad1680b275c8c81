//! Set-up mode: the chip's own access point with tether-esp32's captive
//! portal, and Improv Wi-Fi on the USB port, at the same time. A saved
//! record restarts the chip into station mode; with a record already
//! stored, five minutes without a save restart it too, so a router that
//! came up after the device does not strand it here.

use core::net::Ipv4Addr;

use embassy_executor::Spawner;
use embassy_net::{Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_time::{Duration, Timer};
use esp_hal::peripherals::USB_DEVICE;
use esp_hal::usb::usb_serial_jtag::UsbSerialJtag;
use esp_println::println;
use esp_radio::wifi::ap::AccessPointConfig;
use esp_radio::wifi::scan::ScanConfig;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{AuthenticationMethod, Config, Interface, WifiController};
use static_cell::StaticCell;
use tether_core::provisioning::improv::DeviceInfo;
use tether_core::provisioning::portal::{MAX_LISTED_NETWORKS, Network, PortalConfig};
use tether_core::provisioning::record::ProvisioningRecord;
use tether_core::provisioning::state::ProvisioningConfig;
use tether_core::provisioning::store::ConfigStore;
use tether_esp32::improv::ImprovSerial;
use tether_esp32::portal::{CaptivePortal, PortalBuffers, ScannedNetwork};

use crate::{SharedStore, net_task};

/// The access point's address (and the portal's host).
const AP_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 4, 1);

type Portal = CaptivePortal<'static, SharedStore>;

/// What set-up mode needs from the board.
pub struct Setup {
    pub spawner: Spawner,
    pub store: SharedStore,
    pub usb: USB_DEVICE<'static>,
    pub config: ProvisioningConfig,
}

impl Setup {
    /// Runs set-up mode; restarts the chip when it is done.
    pub async fn run(
        self,
        mut controller: WifiController<'static>,
        record: Option<ProvisioningRecord>,
    ) -> ! {
        // Scan first (in station mode): the form and Improv list the result.
        let _ = controller.set_config(&Config::Station(StationConfig::default()));
        let found = controller
            .scan_async(&ScanConfig::default().with_max(MAX_LISTED_NETWORKS))
            .await
            .unwrap_or_default();
        let mut scanned: heapless::Vec<ScannedNetwork, MAX_LISTED_NETWORKS> = heapless::Vec::new();
        for ap in &found {
            let Ok(ssid) = heapless::String::try_from(ap.ssid.as_str()) else {
                continue;
            };
            let secured = !matches!(ap.auth_method, None | Some(AuthenticationMethod::None));
            let _ = scanned.push(ScannedNetwork {
                ssid,
                rssi: ap.signal_strength,
                secured,
            });
        }
        println!("set-up: {} networks found", scanned.len());

        // The access point, named after its MAC address (the station
        // interface may already be in use: its singleton is taken once).
        let ap_interface = Interface::access_point();
        let mac = ap_interface.mac_address();
        static NAME: StaticCell<heapless::String<16>> = StaticCell::new();
        let name = NAME.init(heapless::String::new());
        let _ = core::fmt::write(name, format_args!("tether-{:02X}{:02X}", mac[4], mac[5]));
        let ap =
            AccessPointConfig::default().with_ssid(name.as_str().try_into().expect("short name"));
        controller
            .set_config(&Config::AccessPoint(ap))
            .expect("access point");
        println!(
            "set-up: join Wi-Fi \"{}\", then open http://{AP_ADDRESS}/",
            name.as_str()
        );
        static RESOURCES: StaticCell<StackResources<6>> = StaticCell::new();
        let (stack, runner) = embassy_net::new(
            ap_interface,
            embassy_net::Config::ipv4_static(StaticConfigV4 {
                address: Ipv4Cidr::new(AP_ADDRESS, 24),
                gateway: None,
                dns_servers: heapless::Vec::new(),
            }),
            RESOURCES.init(StackResources::new()),
            u64::from(esp_hal::rng::Rng::new().random()),
        );
        self.spawner.spawn(net_task(runner).expect("net task"));

        // The portal.
        static PORTAL: StaticCell<Portal> = StaticCell::new();
        static BUFFERS: StaticCell<PortalBuffers> = StaticCell::new();
        let default_url = option_env!("TETHER_URL").unwrap_or("");
        let portal: &'static Portal = PORTAL.init(CaptivePortal::new(
            stack,
            AP_ADDRESS,
            PortalConfig::new("192.168.4.1")
                .with_device_name(name.as_str())
                .with_default_server_url(default_url),
            self.store,
        ));
        portal.set_networks(scanned.iter().cloned());
        self.spawner
            .spawn(portal_task(portal, BUFFERS.init(PortalBuffers::new())).expect("portal task"));

        // Improv on the USB port, beside the portal.
        let networks: heapless::Vec<Network<'_>, MAX_LISTED_NETWORKS> = scanned
            .iter()
            .map(|n| Network {
                ssid: n.ssid.as_str(),
                rssi: n.rssi,
                secured: n.secured,
            })
            .collect();
        let info = DeviceInfo {
            firmware_name: env!("CARGO_PKG_NAME"),
            firmware_version: env!("CARGO_PKG_VERSION"),
            chip: if cfg!(feature = "esp32c6") {
                "ESP32-C6"
            } else {
                "ESP32-C3"
            },
            device_name: name.as_str(),
        };
        let mut improv = ImprovSerial::new(UsbSerialJtag::new(self.usb).into_async(), info);
        let mut store = self.store;
        let improv_done = async {
            loop {
                let Ok(wifi) = improv.next_credentials(&networks).await else {
                    Timer::after(Duration::from_secs(1)).await;
                    continue;
                };
                // Improv carries Wi-Fi only: the server and token come from
                // the factory record (or the portal).
                let updated = record.clone().map(|mut r| {
                    r.wifi = Some(wifi);
                    r
                });
                match updated.map(|r| store.save(&r)) {
                    Some(Ok(())) => {
                        let _ = improv.provisioned("").await;
                        return;
                    }
                    _ => {
                        println!("set-up: Improv needs a factory record (server and token) first");
                        let _ = improv.connect_failed().await;
                    }
                }
            }
        };
        // Without a stored record the portal stays open; with one, it
        // times out so the saved credentials get tried again.
        let timeout = async {
            if record.is_some() {
                Timer::after(Duration::from_millis(self.config.portal_timeout_ms)).await;
                println!("set-up: no settings within the portal timeout");
            } else {
                core::future::pending::<()>().await;
            }
        };
        embassy_futures::select::select3(portal.saved(), improv_done, timeout).await;
        println!("set-up: done, restarting");
        // Let the phone load the status page before the access point goes.
        Timer::after(Duration::from_secs(3)).await;
        esp_hal::system::software_reset()
    }
}

#[embassy_executor::task]
async fn portal_task(portal: &'static Portal, buffers: &'static mut PortalBuffers) {
    portal.run(buffers).await
}
