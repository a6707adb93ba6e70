# escape=`
# A Windows build saved by a Windows editor: CRLF line endings and a byte-order mark.
FROM mcr.microsoft.com/dotnet/sdk:8.0-nanoserver-ltsc2022 AS build
WORKDIR C:\src
COPY *.csproj .\
RUN dotnet restore
COPY . .
RUN dotnet publish -c Release `
    -o C:\publish `
    --no-restore

FROM mcr.microsoft.com/dotnet/aspnet:8.0-nanoserver-ltsc2022
WORKDIR C:\app
COPY --from=build C:\publish .
ENV ASPNETCORE_URLS=http://+:8080 `
    DOTNET_RUNNING_IN_CONTAINER=true
EXPOSE 8080
USER ContainerUser
ENTRYPOINT ["dotnet", "App.dll"]
